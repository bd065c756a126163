-- Waiting time from registration to the service, in days, by specialty and month of the service:
-- bookings not cancelled, the persons they are for, the median and the 90th percentile.
SELECT
    specialty_code,
    year,
    month,
    count(*) AS bookings,
    count(DISTINCT person_id) AS persons,
    median(days_from_registration) AS median_days,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY days_from_registration) AS p90_days
FROM waiting_times
WHERE cancelled_at IS NULL
GROUP BY specialty_code, year, month
ORDER BY specialty_code, year, month
