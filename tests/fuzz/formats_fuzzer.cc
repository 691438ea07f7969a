// libFuzzer target for the model file parsers: every input is tried as GGUF, as safetensors, as JSON
// (and a JSON document as a tokenizer.json) and as a PPM/PGM image (`kestrel classify --image`), and whatever opens is
// fully exercised. Only kestrel::Error may come out; anything else (a crash, a sanitizer report, another exception
// type) is a finding.
//
// The .cc extension keeps this file out of the kestrel_tests glob (tests/*.cpp); build and run it with
// tests/fuzz/run_formats_fuzzer.sh (clang only).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "formats/pnm.h"
#include "formats/safetensors.h"
#include "tokenizer/encoder_inputs.h"
#include "tokenizer/tokenizer.h"

namespace {

// The parsers take paths, so each input is written to one scratch file per process, removed at exit.
struct ScratchFile {
  std::string path = "/dev/shm/kestrel_formats_fuzz_" + std::to_string(::getpid());
  ~ScratchFile() { ::unlink(path.c_str()); }
};

const std::string& scratch_path() {
  static const ScratchFile file;
  return file.path;
}

void write_input(const uint8_t* data, size_t size) {
  const int fd = ::open(scratch_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) __builtin_trap();
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) __builtin_trap();
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

void fuzz_gguf() {
  try {
    const auto f = kestrel::GgufFile::open(scratch_path());
    for (const auto& [key, value] : f->metadata()) (void)value.to_string();
    for (const auto& info : f->tensors()) {
      try {
        const auto t = f->tensor(info.name);
        volatile uint8_t sink = 0;
        const auto* p = static_cast<const uint8_t*>(t.data);
        for (size_t i = 0; i < t.nbytes(); i += 997) sink = sink + p[i];
        if (t.nbytes()) sink = sink + p[t.nbytes() - 1];
      } catch (const kestrel::Error&) {
      }
    }
  } catch (const kestrel::Error&) {
  }
}

void fuzz_safetensors() {
  try {
    const auto f = kestrel::SafetensorsFile::open(scratch_path());
    for (const auto& info : f->tensors()) {
      try {
        const auto t = f->tensor(info.name);
        volatile uint8_t sink = 0;
        if (t.nbytes()) sink = sink + static_cast<const uint8_t*>(t.data)[t.nbytes() - 1];
      } catch (const kestrel::Error&) {
      }
    }
  } catch (const kestrel::Error&) {
  }
}

// A document that loads as a tokenizer.json must also tokenize, batch and decode.
void fuzz_tokenizer_json(const nlohmann::json& document) {
  try {
    const kestrel::Tokenizer tok(kestrel::spec_from_tokenizer_json(document));
    const std::string_view texts[] = {"Hello, world! unaffable [MASK] caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xFF", ""};
    const std::pair<std::string_view, std::string_view> pairs[] = {{texts[0], texts[0]}};
    for (const auto& row : kestrel::encode_batch(tok, texts)) (void)tok.decode(row.ids, true);
    (void)kestrel::encode_pair_batch(tok, pairs);
  } catch (const kestrel::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_input(data, size);
  fuzz_gguf();
  fuzz_safetensors();
  try {
    fuzz_tokenizer_json(kestrel::parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz input"));
  } catch (const kestrel::Error&) {
  }
  try {
    const kestrel::RgbImage img = kestrel::parse_pnm(std::string_view(reinterpret_cast<const char*>(data), size));
    if (img.rgb.size() != static_cast<size_t>(img.width) * img.height * 3) __builtin_trap();
  } catch (const kestrel::Error&) {
  }
  return 0;
}
