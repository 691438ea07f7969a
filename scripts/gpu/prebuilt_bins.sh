# Sourced by the GPU-call scripts that run binaries built here: use_prebuilt DIR NAME... puts each NAME from
# DIR (plain or .xz) into /tmp/kb, executable, and DIR/lib (shared libraries the device lacks, libutf8proc)
# on LD_LIBRARY_PATH. Run from the repository root.
use_prebuilt() {
  local bin="$1"
  shift
  mkdir -p /tmp/kb
  for f in "$@"; do
    if [[ -f "$bin/$f.xz" ]]; then xz -dc "$bin/$f.xz" >"/tmp/kb/$f"; else cp "$bin/$f" "/tmp/kb/$f"; fi
    chmod +x "/tmp/kb/$f"
  done
  if [[ -d "$bin/lib" ]]; then export LD_LIBRARY_PATH="$(cd "$bin/lib" && pwd):${LD_LIBRARY_PATH:-}"; fi
}
