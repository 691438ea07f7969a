#!/usr/bin/env bash
# Builds the libFuzzer target for the format parsers and the tokenizer.json loader with clang (ASan +
# UBSan) and runs it, seeded with the committed fixtures. Not part of CMake: the default g++ build has no
# libFuzzer.
# Usage: tests/fuzz/run_formats_fuzzer.sh [seconds=60] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
shift || true
out=build-fuzz
mkdir -p "$out/corpus"
cp tests/fixtures/formats/gguf/small.gguf "$out/corpus/"
cp tests/fixtures/formats/safetensors/single/model.safetensors "$out/corpus/"
cp tests/fixtures/formats/safetensors/sharded/model.safetensors.index.json "$out/corpus/"
cp tests/fixtures/tokenizer/trained/gpt2.tokenizer.json tests/fixtures/tokenizer/trained/llama2_spm.tokenizer.json \
  tests/fuzz/seeds/wordpiece.tokenizer.json "$out/corpus/"
cp tests/fixtures/classifier/golden/image_0.ppm "$out/corpus/"

clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc \
  tests/fuzz/formats_fuzzer.cc src/formats/gguf.cpp src/formats/safetensors.cpp src/formats/hf_config.cpp src/formats/pnm.cpp \
  src/core/dtype.cpp src/core/error.cpp src/core/log.cpp src/core/mapped_file.cpp src/core/tensor.cpp \
  src/tokenizer/*.cpp $(pkg-config --cflags --libs fmt libpcre2-8 libutf8proc) -o "$out/formats_fuzzer"

"$out/formats_fuzzer" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 "$@" "$out/corpus"
