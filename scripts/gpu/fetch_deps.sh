#!/usr/bin/env bash
# Run on a networked Debian/Ubuntu x86-64 machine: downloads the build dependencies the GPU machine
# lacks (it has no network and no pcre2/fmt/CLI11/gtest headers) and unpacks them into DIR (default
# build-gpu-tree/deps); scripts/gpu/run_all.sh picks DIR up when it sits beside it as deps/.
set -euo pipefail
dir="${1:-build-gpu-tree/deps}"
tmp=$(mktemp -d)
(cd "$tmp" && apt-get download libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libfmt-dev \
  "$(apt-cache depends libfmt-dev | awk '/Depends: libfmt[0-9]/ {print $2}')" libcli11-dev libgtest-dev libutf8proc-dev libutf8proc2 >/dev/null)
mkdir -p "$dir"
for f in "$tmp"/*.deb; do dpkg -x "$f" "$dir"; done
rm -rf "$tmp"
echo "unpacked into $dir"
