-- Ambulance response time of each case in minutes, from the call being received to the brigade's arrival
-- (null when it never arrived), with priority and county: how fast help comes, and where it is slow.
SELECT
    record_id,
    person_id,
    priority,
    changed_priority,
    county,
    received_at,
    arrived_at,
    year,
    month,
    CAST(date_part('epoch', arrived_at) - date_part('epoch', received_at) AS DOUBLE) / 60.0 AS response_minutes
FROM ambulance_calls
