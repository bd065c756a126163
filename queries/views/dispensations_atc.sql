-- Dispensations of prescription medicines with the ATC classification at levels 1 to 4 (anatomical main
-- group, therapeutic, pharmacological and chemical subgroup): what is dispensed and what it costs.
SELECT
    record_id,
    person_id,
    prescription_id,
    pharmacy_regcode,
    atc_code,
    substr(atc_code, 1, 1) AS atc_level1,
    substr(atc_code, 1, 3) AS atc_level2,
    substr(atc_code, 1, 4) AS atc_level3,
    substr(atc_code, 1, 5) AS atc_level4,
    dispensed_date,
    packages,
    patient_paid,
    insurer_paid,
    year,
    month
FROM prescriptions
