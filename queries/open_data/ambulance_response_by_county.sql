-- Ambulance response time from the call to arrival by county and priority: cases, persons (an unidentified
-- patient counts once per case), and the median and 90th percentile in minutes where the brigade arrived.
SELECT
    county,
    priority,
    count(*) AS cases,
    count(DISTINCT person_id) + sum(CASE WHEN person_id IS NULL THEN 1 ELSE 0 END) AS persons,
    median(response_minutes) AS median_minutes,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY response_minutes) AS p90_minutes
FROM ambulance_response
GROUP BY county, priority
ORDER BY county, priority
