-- Dispensations by ATC level 3 (pharmacological subgroup), the patient's county of residence and month:
-- dispensations, packages, persons, and the insurer's and patients' cost in euros.
SELECT
    d.atc_level3,
    p.county,
    d.year,
    d.month,
    count(*) AS dispensations,
    sum(d.packages) AS packages,
    count(DISTINCT d.person_id) AS persons,
    sum(d.insurer_paid) AS insurer_paid,
    sum(d.patient_paid) AS patient_paid
FROM dispensations_atc d
LEFT JOIN population p ON p.person_id = d.person_id
GROUP BY d.atc_level3, p.county, d.year, d.month
ORDER BY d.atc_level3, p.county, d.year, d.month
