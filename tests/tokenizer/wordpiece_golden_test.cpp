// Kestrel's WordPiece tokenizer against Hugging Face `tokenizers` on all-MiniLM-L6-v2's tokenizer.json
// (cached by scripts/fetch_test_vocabs.sh; skipped when absent, failed under CI=true), with the golden
// encodings of scripts/fixtures/tokenizer/make_wordpiece_golden.py: real tweets and review snippets,
// hard cases and random strings, text pairs, and the encoder inputs under several truncation and padding
// settings. Every comparison is exact.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../common/skip_or_fail.h"
#include "core/error.h"
#include "tokenizer/encoder_inputs.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_fixtures.h"

namespace kestrel {
namespace {

using json = nlohmann::json;

class WordPieceGolden : public testing::Test {
 protected:
  void SetUp() override {
    const auto path = test::vocab_cache_dir() / "all-MiniLM-L6-v2" / "tokenizer.json";
    if (!std::filesystem::exists(path)) KS_SKIP_OR_FAIL(path << " is missing: run scripts/fetch_test_vocabs.sh");
    tokenizer_json_ = test::read_json(path);
    golden_ = test::read_json(test::tokenizer_fixture_dir() / "golden" / "wordpiece_minilm.json");
  }

  json tokenizer_json_, golden_;
};

std::string case_text(const json& c) {
  return c.contains("bytes_hex") ? test::from_hex(c["bytes_hex"].get<std::string>()) : c["text"].get<std::string>();
}

// HF's row for unpadded ids and type ids under tokenizer.json's padding (Fixed, right, pad id 0).
EncoderInput padded(std::vector<int32_t> ids, std::vector<int32_t> type_ids, size_t length) {
  EncoderInput row{std::move(ids), std::move(type_ids), {}};
  row.attention_mask.assign(row.ids.size(), 1);
  const size_t n = length > row.ids.size() ? length - row.ids.size() : 0;
  row.ids.insert(row.ids.end(), n, 0);
  row.type_ids.insert(row.type_ids.end(), n, 0);
  row.attention_mask.insert(row.attention_mask.end(), n, 0);
  return row;
}

json to_json(const EncoderInput& r) {
  return {{"ids", r.ids}, {"type_ids", r.type_ids}, {"attention_mask", r.attention_mask}};
}

std::vector<int32_t> ids_of(const json& c, const char* key, const char* fallback) {
  return c.value(key, c.at(fallback)).get<std::vector<int32_t>>();
}

// Failures are counted, and only the first few shown, so that a regression does not print thousands.
class Mismatches {
 public:
  template <typename A, typename B>
  void check(const A& got, const B& want, const std::string& what) {
    ++checks_;
    if (got == want) return;
    if (++count_ <= 10) ADD_FAILURE() << what;
  }
  ~Mismatches() {
    EXPECT_EQ(count_, 0) << "of " << checks_ << " comparisons";
    std::printf("[ GOLDEN ] %zu comparisons, %zu mismatches\n", checks_, count_);
  }

 private:
  size_t checks_ = 0, count_ = 0;
};

TEST_F(WordPieceGolden, TextsMatchHuggingFace) {
  if (IsSkipped()) return;
  const Tokenizer tok(spec_from_tokenizer_json(tokenizer_json_));
  const size_t pad_to = tokenizer_json_["padding"]["strategy"]["Fixed"].get<size_t>();
  std::vector<std::string> texts;
  Mismatches m;
  for (const json& c : golden_["singles"]) {
    const std::string text = case_text(c);
    texts.push_back(text);
    const std::string where =
        fmt::format("text {}: '{}'", texts.size() - 1, unicode::sanitize_utf8(text).substr(0, 80));
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    m.check(tok.encode(text, true, true), ids, "ids of " + where);
    m.check(tok.encode(text, false, true), std::vector<int32_t>(ids.begin() + 1, ids.end() - 1),
            "ids without special tokens of " + where);
    m.check(tok.encode(text, true, false), ids_of(c, "ids_split_special", "ids"), "split-special ids of " + where);
    const std::string decoded = c["decoded"].get<std::string>();
    m.check(tok.decode(ids, true), decoded, "decode of " + where);
    m.check(tok.decode(ids), c.value("decoded_special", "[CLS] " + decoded + " [SEP]"),
            "decode with special tokens of " + where);
  }
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  const auto rows = encode_batch(tok, views);
  const auto raw = encode_batch(tok, views, {.truncate = false, .pad = false});
  ASSERT_EQ(rows.size(), texts.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& c = golden_["singles"][i];
    const auto ids = ids_of(c, "ids_truncated", "ids");
    m.check(to_json(rows[i]), to_json(padded(ids, std::vector<int32_t>(ids.size(), 0), pad_to)),
            fmt::format("encoder input of text {}", i));
    const auto full = c["ids"].get<std::vector<int32_t>>();
    m.check(to_json(raw[i]), to_json(padded(full, std::vector<int32_t>(full.size(), 0), 0)),
            fmt::format("untruncated encoder input of text {}", i));
  }
}

TEST_F(WordPieceGolden, PairsMatchHuggingFace) {
  if (IsSkipped()) return;
  const Tokenizer tok(spec_from_tokenizer_json(tokenizer_json_));
  const size_t pad_to = tokenizer_json_["padding"]["strategy"]["Fixed"].get<size_t>();
  std::vector<std::pair<std::string, std::string>> texts;
  for (const json& c : golden_["pairs"]) texts.emplace_back(c["a"].get<std::string>(), c["b"].get<std::string>());
  const std::vector<std::pair<std::string_view, std::string_view>> views(texts.begin(), texts.end());
  const auto rows = encode_pair_batch(tok, views);
  const auto raw = encode_pair_batch(tok, views, {.truncate = false, .pad = false});
  Mismatches m;
  for (size_t i = 0; i < texts.size(); ++i) {
    const json& c = golden_["pairs"][i];
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const auto type_ids = c["type_ids"].get<std::vector<int32_t>>();
    m.check(to_json(raw[i]), to_json(padded(ids, type_ids, 0)), fmt::format("pair {}", i));
    m.check(to_json(rows[i]),
            to_json(padded(ids_of(c, "ids_truncated", "ids"), ids_of(c, "type_ids_truncated", "type_ids"), pad_to)),
            fmt::format("truncated and padded pair {}", i));
    m.check(tok.decode(ids, true), c["decoded"].get<std::string>(), fmt::format("decode of pair {}", i));
  }
}

// HF's encode_batch under other "truncation" / "padding" sections, given as HF serializes them.
TEST_F(WordPieceGolden, TruncationAndPaddingVariants) {
  if (IsSkipped()) return;
  for (const json& v : golden_["variants"]) {
    SCOPED_TRACE(v["name"].get<std::string>());
    json tj = tokenizer_json_;
    tj["truncation"] = v["truncation"];
    tj["padding"] = v["padding"];
    const Tokenizer tok(spec_from_tokenizer_json(tj));
    const EncoderInputOptions options{.add_special = v["add_special"].get<bool>()};
    for (const char* kind : {"singles", "pairs"}) {
      SCOPED_TRACE(kind);
      const json& batch = v[kind];
      auto run = [&] {
        std::vector<EncoderInput> rows;
        if (std::string_view(kind) == "singles") {
          const auto texts = batch["inputs"].get<std::vector<std::string>>();
          rows = encode_batch(tok, std::vector<std::string_view>(texts.begin(), texts.end()), options);
        } else {
          const auto texts = batch["inputs"].get<std::vector<std::pair<std::string, std::string>>>();
          rows = encode_pair_batch(
              tok, std::vector<std::pair<std::string_view, std::string_view>>(texts.begin(), texts.end()), options);
        }
        json out = json::array();
        for (const EncoderInput& r : rows) out.push_back(to_json(r));
        return out;
      };
      if (batch.contains("error")) {
        EXPECT_THROW(run(), Error) << "HF: " << batch["error"].get<std::string>();
      } else {
        EXPECT_EQ(run(), batch["rows"]);
      }
    }
  }
}

}  // namespace
}  // namespace kestrel
