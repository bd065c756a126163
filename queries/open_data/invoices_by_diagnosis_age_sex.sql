-- Treatment invoices by main diagnosis chapter (ICD-10 letter and two digits), the patient's five-year
-- age band at the start of treatment and sex: invoices, persons and cost in euros.
SELECT
    substr(main_diagnosis, 1, 3) AS diagnosis_chapter,
    age_band,
    sex,
    count(*) AS invoices,
    count(DISTINCT person_id) AS persons,
    sum(amount) AS cost
FROM invoices_with_patient
GROUP BY substr(main_diagnosis, 1, 3), age_band, sex
ORDER BY diagnosis_chapter, age_band, sex
