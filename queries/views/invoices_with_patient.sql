-- Treatment invoices with the patient's five-year age band at the start of treatment, sex and county of
-- residence from the population register: who is treated for what, by age, sex and region.
SELECT
    i.record_id,
    i.person_id,
    i.provider_regcode,
    i.main_diagnosis,
    i.care_type,
    i.amount,
    i.start_date,
    i.end_date,
    i.year,
    i.month,
    CASE
        WHEN p.birth_year IS NULL THEN NULL
        WHEN extract(year FROM i.start_date) - p.birth_year >= 90 THEN '90+'
        ELSE concat(
            CAST(CAST(extract(year FROM i.start_date) - p.birth_year AS INT) / 5 * 5 AS VARCHAR),
            '-',
            CAST(CAST(extract(year FROM i.start_date) - p.birth_year AS INT) / 5 * 5 + 4 AS VARCHAR))
    END AS age_band,
    p.sex,
    p.county
FROM treatment_invoices i
LEFT JOIN population p ON p.person_id = i.person_id
