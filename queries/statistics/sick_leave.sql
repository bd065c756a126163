-- Sick leave by diagnosis chapter (letter and two digits of ICD-10) and month the leave started:
-- certificates, persons, and sick-leave days.
SELECT
    substr(diagnosis, 1, 3) AS diagnosis_chapter,
    year,
    month,
    count(*) AS certificates,
    count(DISTINCT person_id) AS persons,
    sum(days) AS days
FROM sick_leave_days
GROUP BY substr(diagnosis, 1, 3), year, month
ORDER BY diagnosis_chapter, year, month
