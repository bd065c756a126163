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

# Split benches/sql_queries.sql into one file per statement (q1.sql, q2.sql, …) in folder $2, with python $1.
split_bench_queries() {
  local python=$1 dir=$2
  mkdir -p "$dir"
  "$python" - "$dir" <<'PY'
import pathlib, re, sys
text = pathlib.Path("benches/sql_queries.sql").read_text()
for block in re.split(r";\s*\n", text):
    m = re.search(r"--\s*(q\d+)", block)
    if m:
        pathlib.Path(sys.argv[1], m.group(1) + ".sql").write_text(block.strip() + "\n")
PY
}
