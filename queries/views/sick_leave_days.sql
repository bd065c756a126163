-- Sick-leave days of each certificate (start and end day both counted), with its type and diagnosis.
SELECT
    record_id,
    person_id,
    issuer_regcode,
    diagnosis,
    leave_type,
    start_date,
    end_date,
    year,
    month,
    (end_date - start_date) + 1 AS days
FROM sick_leave
