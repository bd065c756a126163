-- The analyst queries of the SQL bench (benches/sql_e2e.sh), one per statement; each
-- returns few rows, so the bench times the query rather than the printing.

-- q1 aggregate: invoices and cost by care type
SELECT care_type, count(*) AS invoices, sum(amount) AS cost FROM treatment_invoices GROUP BY care_type;

-- q2 join: invoices and distinct patients by county and sex
SELECT p.county, p.sex, count(*) AS invoices, count(DISTINCT i.person_id) AS persons
FROM treatment_invoices i JOIN population p ON p.person_id = i.person_id GROUP BY p.county, p.sex;

-- q3 distinct persons
SELECT count(DISTINCT person_id) AS persons FROM treatment_invoices;

-- q4 window: each patient's three most expensive invoices
SELECT count(*) AS invoices, sum(amount) AS cost FROM (
  SELECT amount, row_number() OVER (PARTITION BY person_id ORDER BY amount DESC) AS r FROM treatment_invoices) t
WHERE r <= 3;

-- q5 date arithmetic: length of treatment by month
SELECT year, month, avg(end_date - start_date) AS days, max(end_date - start_date) AS longest
FROM treatment_invoices GROUP BY year, month;

-- q6 date range filter: diagnoses in the first two months of 2024
SELECT main_diagnosis, count(*) AS invoices FROM treatment_invoices
WHERE start_date >= DATE '2024-01-01' AND start_date < DATE '2024-03-01' GROUP BY main_diagnosis;

-- q7 ranking providers by cost
SELECT provider_regcode, cost, rank() OVER (ORDER BY cost DESC) AS place
FROM (SELECT provider_regcode, sum(amount) AS cost FROM treatment_invoices GROUP BY provider_regcode) t;

-- q8 join and age: cost by ten-year age group and sex
SELECT floor((extract(year FROM i.start_date) - p.birth_year) / 10.0) AS decade, p.sex, count(*) AS invoices,
       sum(i.amount) AS cost
FROM treatment_invoices i JOIN population p ON p.person_id = i.person_id GROUP BY 1, 2;

-- q9 one month, by partition columns
SELECT provider_regcode, care_type, count(*) AS invoices, sum(amount) AS cost FROM treatment_invoices
WHERE year = 2024 AND month = 3 GROUP BY provider_regcode, care_type;

-- q10 the ten most expensive patients
SELECT person_id, sum(amount) AS cost FROM treatment_invoices GROUP BY person_id ORDER BY cost DESC LIMIT 10;
