-- Waiting time from registration to the service by specialty and year: bookings not cancelled,
-- the persons they are for, and the median and 90th percentile of the wait in days.
SELECT
    specialty_code,
    year,
    count(*) AS bookings,
    count(DISTINCT person_id) AS persons,
    median(days_from_registration) AS median_days,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY days_from_registration) AS p90_days
FROM waiting_times
WHERE cancelled_at IS NULL
GROUP BY specialty_code, year
ORDER BY specialty_code, year
