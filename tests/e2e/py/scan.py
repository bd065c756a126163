"""Privacy scan: does any raw identifier of the deliveries appear in what ladu wrote?

usage: scan.py INBOX PATH...
Collects the raw values of every identifying column of every delivery in INBOX
(personal and worker codes, names, addresses, phones, IBANs, payer names,
reference and record numbers, free text), then searches every file under each
PATH: the raw bytes for every value of 6+ characters, and, for Parquet, every
decoded string cell for equality with any value or containment of a long one.
Prints each finding and exits 1 if there is any.
"""
import csv
import io
import pathlib
import sys

import pyarrow.parquet as pq

IDENTIFYING = {
    "population": ["isikukood", "first_name", "last_name", "birth_date", "residence_address", "death_record_no"],
    "treatment_invoices": ["invoice_id", "isikukood"],
    "sick_leave": ["certificate_id", "isikukood", "doctor_code"],
    "prescriptions": ["dispensation_id", "prescription_id", "isikukood", "prescriber_code"],
    "ambulance_calls": ["case_no", "description", "patient_first_name", "patient_last_name", "patient_isikukood",
                        "patient_birth_date", "caller_name", "caller_phone", "location_address"],
    "waiting_list": ["booking_id", "isikukood", "payer_name", "payer_iban", "reference_no"],
    "cancer_screening": ["invitation_id", "isikukood", "first_name", "last_name"],
}
DELIMITER = {"population": ";", "treatment_invoices": ";", "sick_leave": ",", "prescriptions": ";",
             "ambulance_calls": ",", "waiting_list": ";", "cancer_screening": ","}
ENCODING = {"prescriptions": "cp1257"}


def raw_values(inbox):
    values = set()
    for source, cols in IDENTIFYING.items():
        for f in sorted((inbox / source).glob("*.csv")) if (inbox / source).exists() else []:
            text = f.read_bytes().decode(ENCODING.get(source, "utf-8-sig"), errors="replace")
            for row in csv.DictReader(io.StringIO(text, newline=""), delimiter=DELIMITER[source]):
                for c in cols:
                    v = (row.get(c) or "").strip().lstrip("'").strip()
                    if v:
                        values.add(v)
                        # Multi-line free text: each line on its own too.
                        values.update(line.strip() for line in v.splitlines() if len(line.strip()) >= 6)
    return values


def main():
    inbox = pathlib.Path(sys.argv[1])
    values = raw_values(inbox)
    long_values = [v for v in values if len(v) >= 6]
    findings = []
    scanned = 0
    for target in map(pathlib.Path, sys.argv[2:]):
        files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
        for f in files:
            scanned += 1
            data = f.read_bytes()
            for v in long_values:
                if v.encode() in data:
                    findings.append(f"{f}: raw bytes contain {v!r}")
            if f.suffix == ".parquet":
                table = pq.read_table(f)
                for name in table.column_names:
                    for cell in table.column(name).to_pylist():
                        if not isinstance(cell, str):
                            continue
                        if cell in values or any(v in cell for v in long_values):
                            findings.append(f"{f}: column {name} holds a raw value {cell!r}")
    for line in findings:
        print(line)
    print(f"scanned {scanned} files for {len(values)} raw values: {len(findings)} findings", file=sys.stderr)
    sys.exit(1 if findings or not values or not scanned else 0)


main()
