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
