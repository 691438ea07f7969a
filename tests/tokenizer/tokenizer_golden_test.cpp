// Kestrel's tokenizers against golden ids from Hugging Face `tokenizers`
// (scripts/fixtures/tokenizer/make_tokenizer_fixtures.py): small tokenizers trained with each real
// configuration (committed tokenizer.json, always run) and real vocabularies read from GGUF keys
// (SmolLM2 from the default model, GPT-2, Llama-3, Qwen2, Llama-2 SPM from the GGUFs that
// scripts/fetch_test_vocabs.sh caches; skipped when absent).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../common/skip_or_fail.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_fixtures.h"

namespace kestrel {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

fs::path fixture_dir() {
  return test::tokenizer_fixture_dir();
}
using test::from_hex;
using test::read_json;
using test::vocab_cache_dir;

// Real vocabularies: the default model and llama.cpp's vocab-only GGUFs (scripts/fetch_test_vocabs.sh).
fs::path gguf_path(const std::string& name) {
  if (name == "smollm2") return vocab_cache_dir().parent_path() / "SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string file = name;
  std::replace(file.begin(), file.end(), '_', '-');
  return vocab_cache_dir() / ("ggml-vocab-" + file + ".gguf");
}

void check_golden(const Tokenizer& tok, const std::string& golden_name) {
  const json golden = read_json(fixture_dir() / "golden" / (golden_name + ".json"));
  int index = 0;
  for (const json& c : golden.at("cases")) {
    const std::string text = from_hex(c.at("bytes_hex").get<std::string>());
    SCOPED_TRACE(fmt::format("{} case {}: {}", golden_name, index++, unicode::sanitize_utf8(text).substr(0, 80)));
    const auto ids = c.at("ids_parse_special").get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, true, true), c.at("ids_add_special").get<std::vector<int32_t>>());
    EXPECT_EQ(tok.encode(text, false, true), ids);
    EXPECT_EQ(tok.encode(text, false, false), c.at("ids_plain").get<std::vector<int32_t>>());
    const std::string decoded = c.at("decoded").get<std::string>();
    EXPECT_EQ(tok.decode(ids), decoded);
    EXPECT_EQ(tok.decode(ids, true), c.at("decoded_skip_special").get<std::string>());
    StreamDecoder stream(tok);
    std::string streamed;
    for (const int32_t id : ids) {
      const std::string piece = stream.push(id);
      EXPECT_TRUE(unicode::is_valid_utf8(piece));
      streamed += piece;
    }
    streamed += stream.flush();
    EXPECT_EQ(streamed, decoded);
    if (c.at("round_trip").get<bool>())
      EXPECT_EQ(tok.decode(tok.encode(text, false, true)), unicode::sanitize_utf8(text));
  }
}

class TokenizerTrained : public testing::TestWithParam<std::string> {};

TEST_P(TokenizerTrained, MatchesHuggingFace) {
  const json tj = read_json(fixture_dir() / "trained" / (GetParam() + ".tokenizer.json"));
  const Tokenizer tok(spec_from_tokenizer_json(tj));
  check_golden(tok, "trained_" + GetParam());
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerTrained,
                         testing::Values("gpt2", "gpt2_prefix_space", "llama3", "qwen2", "smollm2", "llama2_spm",
                                         "metaspace_spm"));

class TokenizerGguf : public testing::TestWithParam<std::string> {};

TEST_P(TokenizerGguf, MatchesHuggingFace) {
  const fs::path path = gguf_path(GetParam());
  if (!fs::exists(path)) KS_SKIP_OR_FAIL(path << " is missing: run scripts/setup.sh and scripts/fetch_test_vocabs.sh");
  const Tokenizer tok(spec_from_gguf(*GgufFile::open(path.string())));
  check_golden(tok, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerGguf,
                         testing::Values("smollm2", "gpt_2", "llama_bpe", "qwen2", "llama_spm"));

// About 1 MB of mixed English prose and code must tokenize well under a second (Release builds; the
// sanitizer build only checks that it completes).
TEST(TokenizerSpeed, OneMegabyteOfEnglish) {
  // The real SmolLM2 vocabulary when present (realistic merge depth), else the small trained one.
  const fs::path model = gguf_path("smollm2");
  const Tokenizer tok =
      fs::exists(model)
          ? Tokenizer(spec_from_gguf(*GgufFile::open(model.string())))
          : Tokenizer(spec_from_tokenizer_json(read_json(fixture_dir() / "trained" / "gpt2.tokenizer.json")));
  std::string text;
  uint32_t seed = 12345;
  const char* words[] = {"the",  "quick",     "brown",     "fox",    "jumps", "over",    "lazy",
                         "dog",  "tokenizer", "inference", "engine", "model", "weights", "cache",
                         "1234", "x += y;",   "(a, b)",    "\n",     "  ",    "It's"};
  while (text.size() < (1 << 20)) {
    seed = seed * 1664525u + 1013904223u;
    text += words[(seed >> 16) % std::size(words)];
    text += ' ';
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok.encode(text, false, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(ids.size(), text.size() / 10);
  EXPECT_EQ(tok.decode(ids), text);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
  EXPECT_LT(seconds, 1.0) << "encoding 1 MB took " << seconds << " s";
#endif
  std::printf("[ TIMING ] encode 1 MB: %.3f s, %zu tokens\n", seconds, ids.size());
}

}  // namespace
}  // namespace kestrel
