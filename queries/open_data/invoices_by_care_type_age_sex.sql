-- Treatment invoices by care type (outpatient, inpatient, day care), the patient's five-year age band at
-- the start of treatment and sex: invoices, persons and cost in euros.
SELECT
    care_type,
    age_band,
    sex,
    count(*) AS invoices,
    count(DISTINCT person_id) AS persons,
    sum(amount) AS cost
FROM invoices_with_patient
GROUP BY care_type, age_band, sex
ORDER BY care_type, age_band, sex
