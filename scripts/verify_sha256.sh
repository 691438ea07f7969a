# Sourced by the download scripts. verify_sha256 DIR < LIST checks the files a sha256sum-format LIST names,
# relative to DIR; on a missing or different file it says which and returns 1.
verify_sha256() {
  local out
  if ! out=$(cd "$1" && sha256sum --check --strict 2>&1); then
    echo "error: files in $1 do not match their recorded sha256 (a corrupt download, or upstream changed a" \
         "pinned release):" >&2
    grep -v ': OK$' <<<"$out" >&2
    return 1
  fi
}
