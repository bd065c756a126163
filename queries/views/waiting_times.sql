-- Waiting time of each waiting-list booking in days: from registration (confirmed_at) to the service, and
-- from the first time the provider had available to the service (how long patients wait, and why).
SELECT
    record_id,
    person_id,
    specialty_code,
    institution_regcode,
    service_time,
    confirmed_at,
    first_available_time,
    cancelled_at,
    service_used,
    year,
    month,
    (CAST(service_time AS DATE) - CAST(confirmed_at AS DATE)) AS days_from_registration,
    (CAST(service_time AS DATE) - CAST(first_available_time AS DATE)) AS days_from_first_available
FROM waiting_list
