-- Ambulance response time from the call to arrival, in minutes, by county and priority: cases,
-- identified patients, the median and the 90th percentile of the cases where the brigade arrived.
SELECT
    county,
    priority,
    count(*) AS cases,
    count(DISTINCT person_id) AS persons,
    median(response_minutes) AS median_minutes,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY response_minutes) AS p90_minutes
FROM ambulance_response
GROUP BY county, priority
ORDER BY county, priority
