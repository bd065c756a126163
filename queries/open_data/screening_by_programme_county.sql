-- Cancer screening invitations by programme and the invited person's county of residence:
-- invitations and persons invited.
SELECT
    s.screening,
    p.county,
    count(*) AS invitations,
    count(DISTINCT s.person_id) AS persons
FROM cancer_screening s
LEFT JOIN population p ON p.person_id = s.person_id
GROUP BY s.screening, p.county
ORDER BY s.screening, p.county
