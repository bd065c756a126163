-- Sick-leave certificates by diagnosis chapter (ICD-10 letter and two digits) and type of leave:
-- certificates, persons and sick-leave days.
SELECT
    substr(diagnosis, 1, 3) AS diagnosis_chapter,
    leave_type,
    count(*) AS certificates,
    count(DISTINCT person_id) AS persons,
    sum(days) AS days
FROM sick_leave_days
GROUP BY substr(diagnosis, 1, 3), leave_type
ORDER BY diagnosis_chapter, leave_type
