-- The SQL suite: everyday analyst queries over the warehouse (benches/sql_e2e.sh times them against
-- DuckDB; tests/e2e/sql.rs checks every answer against DuckDB's). One statement each, opening with
-- `-- sN what it answers`; ties are broken in every ordering, so that both engines agree row for row.

-- s1 median: the typical invoice of each care type
SELECT care_type, median(amount) AS median_cost, count(*) AS invoices FROM treatment_invoices GROUP BY care_type;

-- s2 percentiles: the spread of invoice amounts at each provider (of doubles, as PostgreSQL computes them)
SELECT provider_regcode, percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(amount AS DOUBLE)) AS p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY CAST(amount AS DOUBLE)) AS p90
FROM treatment_invoices GROUP BY provider_regcode;

-- s3 count(DISTINCT) of an expression: patients per diagnosis chapter
SELECT substr(main_diagnosis, 1, 1) AS chapter, count(DISTINCT person_id) AS persons
FROM treatment_invoices GROUP BY substr(main_diagnosis, 1, 1);

-- s4 count(DISTINCT) per person: how many different diagnoses patients have
SELECT diagnoses, count(*) AS persons FROM (
  SELECT person_id, count(DISTINCT main_diagnosis) AS diagnoses FROM treatment_invoices GROUP BY person_id) t
GROUP BY diagnoses;

-- s5 lag by person: days between a patient's consecutive invoices
SELECT avg(gap) AS mean_gap, max(gap) AS longest_gap FROM (
  SELECT start_date - lag(start_date) OVER (PARTITION BY person_id ORDER BY start_date, record_id) AS gap
  FROM treatment_invoices) t;

-- s6 lead by person: inpatient stays followed by another within 30 days (readmissions)
SELECT count(*) AS readmissions FROM (
  SELECT end_date, lead(start_date) OVER (PARTITION BY person_id ORDER BY start_date, record_id) AS next_start
  FROM treatment_invoices WHERE care_type = 'STAT') t
WHERE next_start - end_date <= 30;

-- s7 rank by provider: providers ranked by cost within each care type
SELECT care_type, provider_regcode, cost, rank() OVER (PARTITION BY care_type ORDER BY cost DESC) AS place
FROM (SELECT care_type, provider_regcode, sum(amount) AS cost FROM treatment_invoices GROUP BY care_type, provider_regcode) t;

-- s8 running sum: cost by month and the running total
SELECT year, month, cost, sum(cost) OVER (ORDER BY year, month) AS running_cost
FROM (SELECT year, month, sum(amount) AS cost FROM treatment_invoices GROUP BY year, month) t;

-- s9 first_value by person: patients by the chapter of their first diagnosis
SELECT first_chapter, count(*) AS persons FROM (
  SELECT DISTINCT person_id,
         first_value(substr(main_diagnosis, 1, 1)) OVER (PARTITION BY person_id ORDER BY start_date, record_id)
           AS first_chapter
  FROM treatment_invoices) t
GROUP BY first_chapter;

-- s10 running sum by person: patients whose cumulative cost passed 1000 euros
SELECT count(DISTINCT person_id) AS persons FROM (
  SELECT person_id,
         sum(amount) OVER (PARTITION BY person_id ORDER BY start_date, record_id ROWS UNBOUNDED PRECEDING) AS cumulative
  FROM treatment_invoices) t
WHERE cumulative > 1000;

-- s11 window by provider: each month's share of a provider's cost
SELECT provider_regcode, year, month,
       CAST(cost AS DOUBLE) / sum(CAST(cost AS DOUBLE)) OVER (PARTITION BY provider_regcode) AS share
FROM (SELECT provider_regcode, year, month, sum(amount) AS cost FROM treatment_invoices
      GROUP BY provider_regcode, year, month) t;

-- s12 three tables: treatment cost and medicine cost of patients by county
SELECT p.county, sum(i.cost) AS treatment_cost, sum(r.paid) AS medicine_cost, count(*) AS persons
FROM population p
JOIN (SELECT person_id, sum(amount) AS cost FROM treatment_invoices GROUP BY person_id) i ON i.person_id = p.person_id
JOIN (SELECT person_id, sum(insurer_paid) AS paid FROM prescriptions GROUP BY person_id) r ON r.person_id = p.person_id
GROUP BY p.county;

-- s13 join on two keys: sick leave with an invoice for the same diagnosis, by chapter
SELECT substr(s.diagnosis, 1, 1) AS chapter, count(DISTINCT s.person_id) AS persons
FROM sick_leave s
JOIN treatment_invoices i ON i.person_id = s.person_id AND substr(i.main_diagnosis, 1, 3) = substr(s.diagnosis, 1, 3)
GROUP BY substr(s.diagnosis, 1, 1);

-- s14 semi-join: invoices of patients who also bought prescribed medicines
SELECT care_type, count(*) AS invoices FROM treatment_invoices i
WHERE EXISTS (SELECT 1 FROM prescriptions r WHERE r.person_id = i.person_id) GROUP BY care_type;

-- s15 anti-join: residents with no invoice, by county
SELECT county, count(*) AS persons FROM population p
WHERE NOT EXISTS (SELECT 1 FROM treatment_invoices i WHERE i.person_id = p.person_id) GROUP BY county;

-- s16 IN a subquery: invoices of people born before 1950
SELECT count(*) AS invoices, sum(amount) AS cost FROM treatment_invoices
WHERE person_id IN (SELECT person_id FROM population WHERE birth_year < 1950);

-- s17 a CTE read twice: each care type's share of the total cost
WITH c AS (SELECT care_type, sum(amount) AS cost FROM treatment_invoices GROUP BY care_type)
SELECT c.care_type, CAST(c.cost AS DOUBLE) / t.total AS share
FROM c CROSS JOIN (SELECT CAST(sum(cost) AS DOUBLE) AS total FROM c) t;

-- s18 a CTE read twice: patients whose cost is above the average patient's
WITH per_person AS (SELECT person_id, sum(amount) AS cost FROM treatment_invoices GROUP BY person_id)
SELECT count(*) AS persons FROM per_person WHERE cost > (SELECT avg(cost) FROM per_person);

-- s19 date_trunc: medicines dispensed by month
SELECT CAST(date_trunc('month', dispensed_date) AS DATE) AS month, sum(packages) AS packages,
       sum(insurer_paid) AS insurer_paid
FROM prescriptions GROUP BY CAST(date_trunc('month', dispensed_date) AS DATE);

-- s20 date arithmetic: length of sick leave by type and quarter
SELECT leave_type, extract(quarter FROM start_date) AS quarter, avg(end_date - start_date + 1) AS days
FROM sick_leave GROUP BY leave_type, extract(quarter FROM start_date);

-- s21 age at treatment: inpatient stays by the patient's age
SELECT extract(year FROM i.start_date) - p.birth_year AS age, count(*) AS stays
FROM treatment_invoices i JOIN population p ON p.person_id = i.person_id
WHERE i.care_type = 'STAT' GROUP BY extract(year FROM i.start_date) - p.birth_year;

-- s22 LIKE: respiratory diagnoses
SELECT main_diagnosis, count(*) AS invoices FROM treatment_invoices WHERE main_diagnosis LIKE 'J%' GROUP BY main_diagnosis;

-- s23 substr filter: cardiovascular medicines by product
SELECT atc_code, product_name, sum(packages) AS packages FROM prescriptions
WHERE substr(atc_code, 1, 1) = 'C' GROUP BY atc_code, product_name;

-- s24 HAVING: diagnoses seen in more than one care type
SELECT main_diagnosis, count(DISTINCT care_type) AS care_types FROM treatment_invoices
GROUP BY main_diagnosis HAVING count(DISTINCT care_type) > 1;

-- s25 UNION ALL: patients of each register
SELECT 'invoices' AS register, count(DISTINCT person_id) AS persons FROM treatment_invoices
UNION ALL SELECT 'prescriptions', count(DISTINCT person_id) FROM prescriptions
UNION ALL SELECT 'sick leave', count(DISTINCT person_id) FROM sick_leave;

-- s26 UNION: people seen in any of three registers
SELECT count(*) AS persons FROM (
  SELECT person_id FROM treatment_invoices UNION SELECT person_id FROM prescriptions
  UNION SELECT person_id FROM sick_leave) t;

-- s27 top-N per group: the three costliest diagnoses of each care type
SELECT care_type, main_diagnosis, cost FROM (
  SELECT care_type, main_diagnosis, sum(amount) AS cost,
         row_number() OVER (PARTITION BY care_type ORDER BY sum(amount) DESC, main_diagnosis) AS r
  FROM treatment_invoices GROUP BY care_type, main_diagnosis) t
WHERE r <= 3;

-- s28 top-1 per person: patients by the care type of their latest invoice
SELECT care_type, count(*) AS persons FROM (
  SELECT care_type, row_number() OVER (PARTITION BY person_id ORDER BY start_date DESC, record_id) AS r
  FROM treatment_invoices) t
WHERE r = 1 GROUP BY care_type;

-- s29 partition and date filters: February 2024 by care type
SELECT care_type, count(*) AS invoices, sum(amount) AS cost FROM treatment_invoices
WHERE year = 2024 AND start_date BETWEEN DATE '2024-02-01' AND DATE '2024-02-29' GROUP BY care_type;

-- s30 history: versions beyond the first (corrections) by month
SELECT year, month, count(*) - count(DISTINCT record_id) AS corrections, count(*) AS versions
FROM treatment_invoices_history GROUP BY year, month;

-- s31 median of timestamps: ambulance response in seconds by priority
SELECT priority, median(date_part('epoch', arrived_at) - date_part('epoch', received_at)) AS seconds
FROM ambulance_calls WHERE arrived_at IS NOT NULL GROUP BY priority;

-- s32 CASE bands: invoices and patients by cost band
SELECT CASE WHEN amount < 50 THEN 'under 50' WHEN amount < 500 THEN '50 to 500' ELSE '500 and more' END AS band,
       count(*) AS invoices, count(DISTINCT person_id) AS persons
FROM treatment_invoices
GROUP BY CASE WHEN amount < 50 THEN 'under 50' WHEN amount < 500 THEN '50 to 500' ELSE '500 and more' END;

-- s33 several count(DISTINCT): providers, diagnoses and patients in all
SELECT count(DISTINCT provider_regcode) AS providers, count(DISTINCT main_diagnosis) AS diagnoses,
       count(DISTINCT person_id) AS persons
FROM treatment_invoices;

-- s34 join and window: each county's costliest age band
SELECT county, age_band, cost FROM (
  SELECT p.county, floor((extract(year FROM i.start_date) - p.birth_year) / 10) AS age_band, sum(i.amount) AS cost,
         rank() OVER (PARTITION BY p.county ORDER BY sum(i.amount) DESC) AS r
  FROM treatment_invoices i JOIN population p ON p.person_id = i.person_id
  GROUP BY p.county, floor((extract(year FROM i.start_date) - p.birth_year) / 10)) t
WHERE r = 1;
