# Sourced by the end-to-end benches: an installation of ladu in folder $1 for binary $2
# (the shipped source configs, roles and recipients, the repository's queries, a key of its own).
bench_workspace() {
  local dir=$1 bin=$2
  mkdir -p "$dir/config"
  cp -r "$root/config/sources" "$root/config/roles.toml" "$root/config/recipients.toml" "$dir/config/"
  cat > "$dir/config/ladu.toml" <<TOML
key_file = "../ladu.key"
[paths]
inbox = "../inbox"
warehouse = "../warehouse"
outbox = "../outbox"
audit = "../audit"
site = "../site"
queries = "$root/queries"
TOML
  [ -f "$dir/ladu.key" ] || "$bin" keygen --out "$dir/ladu.key" 2>/dev/null
}

# Split a file of statements that open with `-- qN …` or `-- sN …` into one file per statement
# (q1.sql, …) in folder $2, with python $1; $3 is the file (default benches/sql_queries.sql).
split_bench_queries() {
  local python=$1 dir=$2 file=${3:-benches/sql_queries.sql}
  mkdir -p "$dir"
  "$python" - "$dir" "$file" <<'PY'
import pathlib, re, sys
text = pathlib.Path(sys.argv[2]).read_text()
for block in re.split(r";\s*\n", text):
    m = re.search(r"^--\s*([qs]\d+)\s", block, re.M)
    if m:
        pathlib.Path(sys.argv[1], m.group(1) + ".sql").write_text(block.strip() + "\n")
PY
}

# The SQL bench's warehouse in $1 (binary $2), made once: $3 invoices of $4 people (their population),
# half as many prescriptions, a tenth as many sick-leave certificates, a fiftieth as many ambulance calls.
bench_sql_warehouse() {
  local dir=$1 bin=$2 rows=$3 people=$4
  [ -d "$dir/warehouse" ] && return 0
  # The invoices draw their patients from the same people the population lists (same seed).
  "$bin" sample-data --out "$dir/inbox" --rows "$rows" --only treatment_invoices --invalid 0 >/dev/null
  "$bin" sample-data --out "$dir/inbox" --rows "$people" --only population --invalid 0 >/dev/null
  "$bin" sample-data --out "$dir/inbox" --rows $((rows / 2)) --only prescriptions --invalid 0 >/dev/null
  "$bin" sample-data --out "$dir/inbox" --rows $((rows / 10)) --only sick_leave --invalid 0 >/dev/null
  "$bin" sample-data --out "$dir/inbox" --rows $((rows / 50)) --only ambulance_calls --invalid 0 >/dev/null
  "$bin" --config "$dir/config/ladu.toml" -q ingest >/dev/null
  rm -rf "$dir/inbox"
}
