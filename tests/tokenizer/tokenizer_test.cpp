// Unit tests: UTF-8 repair, streaming decode, end-of-generation ids, and bad input of every kind.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace kestrel {
namespace {

using json = nlohmann::json;

json trained(const std::string& style) {
  const char* src = std::getenv("KESTREL_SOURCE_DIR");
  const std::filesystem::path path = std::filesystem::path(src ? src : KESTREL_SOURCE_DIR) / "tests" / "fixtures" /
                                     "tokenizer" / "trained" / (style + ".tokenizer.json");
  std::ifstream in(path);
  return json::parse(in);
}

TEST(TokenizerUnicode, RepairsLikePython) {
  // Expected values from bytes.decode("utf-8", errors="replace").
  EXPECT_EQ(unicode::sanitize_utf8("a\xFF"
                                   "b"),
            "a\uFFFDb");
  EXPECT_EQ(unicode::sanitize_utf8("\xE2\x82"
                                   "x"),
            "\uFFFDx");                                                     // one U+FFFD for the truncated sequence
  EXPECT_EQ(unicode::sanitize_utf8("\xC0\xAF"), "\uFFFD\uFFFD");            // overlong: two
  EXPECT_EQ(unicode::sanitize_utf8("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // surrogate: three
  EXPECT_EQ(unicode::sanitize_utf8("\xF4\x90\x80\x80"), "\uFFFD\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(unicode::sanitize_utf8("ok \xF0\x9F\x98\x80"), "ok \xF0\x9F\x98\x80");
  EXPECT_EQ(unicode::incomplete_tail_length("a\xF0\x9F\x98"), 3u);
  EXPECT_EQ(unicode::incomplete_tail_length("a\xC3"), 1u);
  EXPECT_EQ(unicode::incomplete_tail_length("a\xC3\xA9"), 0u);
  EXPECT_EQ(unicode::incomplete_tail_length("a\x80"), 0u);
}

TEST(TokenizerUnicode, ByteLevelMapRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string encoded, decoded;
  unicode::append_byte_level(encoded, all);
  EXPECT_TRUE(unicode::is_valid_utf8(encoded));
  ASSERT_TRUE(unicode::decode_byte_level(encoded, decoded));
  EXPECT_EQ(decoded, all);
  EXPECT_FALSE(unicode::decode_byte_level("\xE4\xB8\xAD", decoded));  // 中 is not in the map
}

// Each push() is whole UTF-8 and the pieces add up to decode(), for byte-level pieces and <0xNN> tokens.
TEST(TokenizerStream, NeverSplitsCharacters) {
  const std::string text = "héllo 😀 wörld 👨‍👩‍👧 这是测试 \xFF end";
  for (const char* style : {"gpt2", "llama2_spm", "metaspace_spm"}) {
    SCOPED_TRACE(style);
    const Tokenizer tok(spec_from_tokenizer_json(trained(style)));
    const std::vector<int32_t> ids = tok.encode(text, true, true);
    StreamDecoder stream(tok, true);
    std::string out;
    for (const int32_t id : ids) {
      const std::string piece = stream.push(id);
      EXPECT_TRUE(unicode::is_valid_utf8(piece));
      out += piece;
    }
    out += stream.flush();
    EXPECT_EQ(out, tok.decode(ids, true));
    EXPECT_EQ(out, unicode::sanitize_utf8(text));
  }
}

TEST(TokenizerStream, FlushReplacesAnUnfinishedCharacter) {
  const Tokenizer tok(spec_from_tokenizer_json(trained("llama2_spm")));
  const int32_t e4 = *tok.find_token("<0xE4>"), b8 = *tok.find_token("<0xB8>");
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.push(e4), "");
  EXPECT_EQ(stream.push(b8), "");
  EXPECT_EQ(stream.flush(), "\uFFFD");
  EXPECT_THROW(stream.push(-1), Error);
}

TEST(TokenizerSpecial, EndOfGenerationAndSpecialIds) {
  const Tokenizer tok(spec_from_tokenizer_json(trained("gpt2")));
  const int32_t im_end = *tok.find_token("<|im_end|>"), eot = *tok.find_token("<|eot_id|>");
  const int32_t endoftext = *tok.find_token("<|endoftext|>");
  EXPECT_TRUE(tok.is_eog(im_end));
  EXPECT_TRUE(tok.is_eog(eot));
  EXPECT_TRUE(tok.is_eog(endoftext));
  EXPECT_EQ(tok.eot_id(), eot);
  EXPECT_FALSE(tok.is_eog(*tok.find_token("<|im_start|>")));
  EXPECT_TRUE(tok.is_special(im_end));
  EXPECT_FALSE(tok.is_special(*tok.find_token("[TOOL]")));
  // parse_special decides whether the text of a special token is that token.
  EXPECT_EQ(tok.encode("<|im_end|>", false, true), std::vector<int32_t>{im_end});
  EXPECT_GT(tok.encode("<|im_end|>", false, false).size(), 1u);
}

TEST(TokenizerErrors, DecodeRejectsUnknownIds) {
  const Tokenizer tok(spec_from_tokenizer_json(trained("qwen2")));
  const std::vector<int32_t> bad_high = {1, tok.vocab_size()}, bad_low = {-5};
  EXPECT_THROW(tok.decode(bad_high), Error);
  EXPECT_THROW(tok.decode(bad_low), Error);
  EXPECT_THROW(tok.token_text(tok.vocab_size()), Error);
}

TEST(TokenizerErrors, MalformedTokenizerJson) {
  const json good = trained("gpt2");
  EXPECT_NO_THROW(spec_from_tokenizer_json(good));
  auto expect_error = [&](const std::function<void(json&)>& corrupt, const char* what) {
    json j = good;
    corrupt(j);
    EXPECT_THROW(Tokenizer(spec_from_tokenizer_json(j)), Error) << what;
  };
  EXPECT_THROW(spec_from_tokenizer_json(json::array()), Error);
  expect_error([](json& j) { j.erase("model"); }, "no model");
  expect_error([](json& j) { j["model"]["type"] = "WordPiece"; }, "unsupported model");
  expect_error([](json& j) { j["model"]["vocab"] = json::array({1, 2}); }, "vocab not an object");
  expect_error([](json& j) { j["model"]["vocab"]["Ġzz"] = -3; }, "negative id");
  expect_error([](json& j) { j["model"]["vocab"]["Ġzz"] = 1 << 30; }, "huge id");
  expect_error([](json& j) { j["model"]["vocab"]["Ġzz"] = "seven"; }, "id not a number");
  expect_error([](json& j) { j["model"]["merges"][0] = "a b c"; }, "three-part merge");
  expect_error([](json& j) { j["model"]["merges"][0] = 5; }, "merge not a string");
  expect_error([](json& j) { j["model"]["dropout"] = 0.1; }, "dropout");
  expect_error([](json& j) { j["added_tokens"][0].erase("content"); }, "added token without content");
  expect_error([](json& j) { j["added_tokens"][0]["content"] = ""; }, "empty added token");
  expect_error([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, "unsupported pre-tokenizer");
  expect_error(
      [](json& j) {
        j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
      },
      "bad regex");
  expect_error(
      [](json& j) {
        j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}};
      },
      "bad behavior");
  expect_error([](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, "unsupported normalizer");
  expect_error([](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "unsupported decoder");
  expect_error([](json& j) { j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", 3}}; }, "bad template");
  json config = {{"bos_token", "<not-a-token>"}};
  EXPECT_THROW(spec_from_tokenizer_json(good, &config), Error);
}

TEST(TokenizerErrors, BadGgufFields) {
  GgufTokenizerFields good;
  good.model = "gpt2";
  good.tokens = {"a", "b", "ab"};
  good.merges = {"a b"};
  EXPECT_NO_THROW(spec_from_gguf_fields(good));
  auto expect_error = [&](const std::function<void(GgufTokenizerFields&)>& corrupt, const char* what) {
    GgufTokenizerFields f = good;
    corrupt(f);
    EXPECT_THROW(spec_from_gguf_fields(f), Error) << what;
  };
  expect_error([](auto& f) { f.model = "bert"; }, "unknown model");
  expect_error([](auto& f) { f.tokens.clear(); }, "no tokens");
  expect_error([](auto& f) { f.scores = {1.0f}; }, "score count");
  expect_error([](auto& f) { f.token_types = {1, 1, 42}; }, "token type");
  expect_error([](auto& f) { f.merges = {"ab"}; }, "merge without space");
  expect_error([](auto& f) { f.merges.clear(); }, "gpt2 without merges");
  expect_error([](auto& f) { f.pre = "no-such-pre"; }, "unknown pre");
  expect_error([](auto& f) { f.bos_id = 3; }, "bos out of range");
  expect_error([](auto& f) { f.add_bos = true; }, "add_bos without bos");
  expect_error([](auto& f) { f.model = "llama"; }, "llama without scores");
}

// Random bytes: no crash, and byte-level BPE gives back exactly the repaired text.
TEST(TokenizerFuzz, RandomBytesRoundTrip) {
  std::mt19937 rng(7);
  for (const char* style : {"llama3", "smollm2", "llama2_spm"}) {
    const Tokenizer tok(spec_from_tokenizer_json(trained(style)));
    for (int iter = 0; iter < 200; ++iter) {
      std::string text(rng() % 64, '\0');
      for (char& c : text) c = static_cast<char>(rng() % 4 == 0 ? ' ' : rng() % 256);
      const std::vector<int32_t> ids = tok.encode(text, true, iter % 2 == 0);
      const std::string decoded = tok.decode(ids, true);
      EXPECT_TRUE(unicode::is_valid_utf8(decoded));
      if (tok.spec().model == TokenizerModel::byte_level_bpe) EXPECT_EQ(decoded, unicode::sanitize_utf8(text));
    }
  }
}

TEST(TokenizerLimits, LongWhitespaceAndRepeats) {
  const Tokenizer tok(spec_from_tokenizer_json(trained("llama3")));
  const std::string spaces(200000, ' '), newlines(200000, '\n');
  EXPECT_EQ(tok.decode(tok.encode(spaces + "x" + newlines, false, false)), spaces + "x" + newlines);
  const Tokenizer spm(spec_from_tokenizer_json(trained("llama2_spm")));
  const std::string word(300000, 'a');
  EXPECT_EQ(spm.decode(spm.encode(word, false, false)), word);
}

}  // namespace
}  // namespace kestrel

namespace kestrel {
namespace {

// Real Qwen2/2.5 tokenizer.json files ask for NFC: decomposed input must tokenize like composed input.
TEST(TokenizerNormalizer, NfcComposesBeforeTokenizing) {
  json j = trained("gpt2");
  j["normalizer"] = {{"type", "NFC"}};
  const Tokenizer nfc(spec_from_tokenizer_json(j));
  const std::string composed = "caf\xC3\xA9 \xEA\xB0\x80";        // "café 가"
  const std::string decomposed = "cafe\xCC\x81 \xE1\x84\x80\xE1\x85\xA1";  // e + U+0301, jamo U+1100 U+1161
  EXPECT_EQ(nfc.encode(decomposed, false, false), nfc.encode(composed, false, false));
  EXPECT_EQ(nfc.decode(nfc.encode(decomposed, false, false)), composed);
  const Tokenizer plain(spec_from_tokenizer_json(trained("gpt2")));
  EXPECT_NE(plain.encode(decomposed, false, false), plain.encode(composed, false, false));
}

}  // namespace
}  // namespace kestrel
