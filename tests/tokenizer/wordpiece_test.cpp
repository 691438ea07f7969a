// Unit tests of the WordPiece pieces on a tiny BERT-style tokenizer.json: the normalizer, the
// pre-tokenizer, greedy WordPiece with [UNK], the decoder, templates, truncation, padding, and
// malformed documents (which must give kestrel::Error, never a crash). Expected values are Hugging Face
// `tokenizers` 0.23's on the same configuration.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "tokenizer/bert_normalizer.h"
#include "tokenizer/bert_pre_tokenizer.h"
#include "tokenizer/encoder_inputs.h"
#include "tokenizer/tokenizer.h"

namespace kestrel {
namespace {

using json = nlohmann::json;

// ids: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, then the words below in order.
json tiny_bert() {
  const std::vector<std::string> words = {"un",  "##aff", "##able", "hello", "world", "!",   ",", ".",  "a",   "##a",
                                          "the", "cafe",  "i",      "'",     "m",     "don", "t", "do", "not", "##s"};
  json vocab = {{"[PAD]", 0}, {"[UNK]", 1}, {"[CLS]", 2}, {"[SEP]", 3}, {"[MASK]", 4}};
  for (size_t i = 0; i < words.size(); ++i) vocab[words[i]] = 5 + i;
  json added = json::array();
  for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
    added.push_back({{"id", vocab[t]}, {"content", t}, {"special", true}, {"normalized", false}});
  auto special = [](const char* t, int type_id) { return json{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}}; };
  auto sequence = [](const char* s, int type_id) { return json{{"Sequence", {{"id", s}, {"type_id", type_id}}}}; };
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "BertNormalizer"},
        {"clean_text", true},
        {"handle_chinese_chars", true},
        {"strip_accents", nullptr},
        {"lowercase", true}}},
      {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)}},
        {"pair", {special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0), sequence("B", 1), special("[SEP]", 1)}},
        {"special_tokens",
         {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}, {"tokens", {"[CLS]"}}}},
          {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}}},
      {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
      {"model",
       {{"type", "WordPiece"},
        {"unk_token", "[UNK]"},
        {"continuing_subword_prefix", "##"},
        {"max_input_chars_per_word", 100},
        {"vocab", vocab}}},
  };
}

Tokenizer make(const json& j) {
  return Tokenizer(spec_from_tokenizer_json(j));
}

std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> out;
  for (const TextRange& r : bert_pre_tokenize(text)) out.emplace_back(text.substr(r.begin, r.end - r.begin));
  return out;
}

TEST(BertNormalizer, CleansSpacesCjkAccentsAndCase) {
  const BertNormalizerOptions all;
  // Control characters, NUL, U+FFFD, zero-width and private-use characters go; whitespace becomes ' '.
  EXPECT_EQ(bert_normalize(std::string("a\tb\nc\r\x00", 7) + "d\x07\xEF\xBF\xBD\xE2\x80\x8B\xEE\x80\x80"
                                                             "e\xC2\xA0"
                                                             "f",
                           all),
            "a b c de f");
  // Ideographs are spaced, Hangul is not (and NFD takes its syllables apart).
  EXPECT_EQ(bert_normalize("中文ab한", all), " 中  文 ab\u1112\u1161\u11AB");
  EXPECT_EQ(bert_normalize("Café NAÏVE Ångström", all), "cafe naive angstrom");
  EXPECT_EQ(bert_normalize("\xC4\xB0", {.strip_accents = false}), "i\xCC\x87");  // İ -> i + U+0307
  EXPECT_EQ(bert_normalize("\xC4\xB0", all), "i");
  EXPECT_EQ(bert_normalize("Café", {.strip_accents = false, .lowercase = false}), "Café");
  EXPECT_EQ(bert_normalize("Café\t", {.clean_text = false, .strip_accents = true, .lowercase = false}), "Cafe\t");
  // Marks newer than Unicode 8.0 are not stripped (HF's category tables are 8.0's).
  EXPECT_EQ(bert_normalize("a\xE0\xA2\x98", all), "a\xE0\xA2\x98");  // U+0898
  EXPECT_EQ(bert_normalize("", all), "");
}

TEST(BertNormalizer, NullStripAccentsFollowsLowercase) {
  json j = tiny_bert();
  j["normalizer"]["lowercase"] = false;
  EXPECT_FALSE(spec_from_tokenizer_json(j).bert_normalizer->strip_accents);
  j["normalizer"]["lowercase"] = true;
  EXPECT_TRUE(spec_from_tokenizer_json(j).bert_normalizer->strip_accents);
  j["normalizer"]["strip_accents"] = false;
  EXPECT_FALSE(spec_from_tokenizer_json(j).bert_normalizer->strip_accents);
}

TEST(BertPreTokenizer, SplitsWhitespaceAndIsolatesPunctuation) {
  EXPECT_EQ(words_of("Hello, world!!"), (std::vector<std::string>{"Hello", ",", "world", "!", "!"}));
  EXPECT_EQ(words_of("  a\u3000b\u2028c\u0085d  "), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(words_of("$5+3=8 «quoted» x^y"),
            (std::vector<std::string>{"$", "5", "+", "3", "=", "8", "«", "quoted", "»", "x", "^", "y"}));
  EXPECT_EQ(words_of("a\u2E43b"), (std::vector<std::string>{"a\u2E43b"}));  // punctuation after Unicode 8.0: no split
  EXPECT_TRUE(words_of("").empty());
  EXPECT_TRUE(words_of(" \t\n").empty());
}

TEST(WordPiece, GreedyLongestMatchWithUnk) {
  const Tokenizer tok = make(tiny_bert());
  auto id = [&](const char* t) { return *tok.find_token(t); };
  EXPECT_EQ(tok.encode("unaffable", false, true), (std::vector<int32_t>{id("un"), id("##aff"), id("##able")}));
  EXPECT_EQ(tok.encode("UnAffable!", true, true),
            (std::vector<int32_t>{id("[CLS]"), id("un"), id("##aff"), id("##able"), id("!"), id("[SEP]")}));
  // One piece that does not match makes the whole word [UNK], not just that piece.
  EXPECT_EQ(tok.encode("unaffablex hello", false, true), (std::vector<int32_t>{id("[UNK]"), id("hello")}));
  EXPECT_EQ(tok.encode("zzz", false, true), (std::vector<int32_t>{id("[UNK]")}));
  // max_input_chars_per_word counts characters: 100 match piece by piece, 101 are one [UNK].
  const std::vector<int32_t> hundred = tok.encode(std::string(100, 'a'), false, true);
  ASSERT_EQ(hundred.size(), 100u);
  EXPECT_EQ(hundred[0], id("a"));
  EXPECT_EQ(hundred[99], id("##a"));
  EXPECT_EQ(tok.encode(std::string(101, 'a'), false, true), (std::vector<int32_t>{id("[UNK]")}));
  EXPECT_TRUE(tok.encode("", true, false).size() == 2 && tok.encode(" \t ", false, true).empty());
  // Special-token text is that token unless split_special; [MASK] is not normalized first.
  EXPECT_EQ(tok.encode("the [MASK]", false, true), (std::vector<int32_t>{id("the"), id("[MASK]")}));
  EXPECT_EQ(tok.encode("the [mask]", false, true),
            (std::vector<int32_t>{id("the"), id("[UNK]"), id("[UNK]"), id("[UNK]")}));
}

TEST(WordPiece, DecoderJoinsPiecesAndCleansUp) {
  const Tokenizer tok = make(tiny_bert());
  const std::vector<int32_t> ids = tok.encode("Hello, world! Unaffable. I'm don't do not", true, true);
  EXPECT_EQ(tok.decode(ids, true), "hello, world! unaffable. i ' m don ' t do not");
  EXPECT_EQ(tok.decode(ids), "[CLS] hello, world! unaffable. i ' m don ' t do not [SEP]");
  const int32_t s = *tok.find_token("##s");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{s}), "##s");  // a first token keeps its prefix
  json j = tiny_bert();
  j["decoder"]["cleanup"] = false;
  EXPECT_EQ(make(j).decode(ids, true), "hello , world ! unaffable . i ' m don ' t do not");
  j["decoder"] = nullptr;  // no decoder: tokens joined with spaces
  EXPECT_EQ(make(j).decode(ids, true), "hello , world ! un ##aff ##able . i ' m don ' t do not");
}

TEST(WordPiece, TemplatesGiveTypeIds) {
  const Tokenizer tok = make(tiny_bert());
  const std::pair<std::string_view, std::string_view> pair[] = {{"hello world", "the cafe"}};
  const EncoderInput row = encode_pair_batch(tok, pair)[0];
  EXPECT_EQ(row.ids, (std::vector<int32_t>{2, 8, 9, 3, 15, 16, 3}));
  EXPECT_EQ(row.type_ids, (std::vector<int32_t>{0, 0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(row.attention_mask, std::vector<int32_t>(7, 1));
  const EncoderInput plain = encode_pair_batch(tok, pair, {.add_special = false})[0];
  EXPECT_EQ(plain.ids, (std::vector<int32_t>{8, 9, 15, 16}));
  EXPECT_EQ(plain.type_ids, (std::vector<int32_t>{0, 0, 1, 1}));
  // BertProcessing is the same template; a multi-id special token is allowed.
  json j = tiny_bert();
  j["post_processor"] = {{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}}};
  EXPECT_EQ(encode_pair_batch(make(j), pair)[0].type_ids, row.type_ids);
  j = tiny_bert();
  j["post_processor"]["special_tokens"]["[CLS]"]["ids"] = {2, 4};
  EXPECT_EQ(encode_pair_batch(make(j), pair)[0].ids, (std::vector<int32_t>{2, 4, 8, 9, 3, 15, 16, 3}));
  EXPECT_EQ(make(j).encode("hello", true, true), (std::vector<int32_t>{2, 4, 8, 3}));
  // Without a post-processor: A then B, type ids 0 and 1, no special tokens.
  j = tiny_bert();
  j["post_processor"] = nullptr;
  const EncoderInput none = encode_pair_batch(make(j), pair)[0];
  EXPECT_EQ(none.ids, plain.ids);
  EXPECT_EQ(none.type_ids, plain.type_ids);
}

EncoderInput one_pair(const json& j, std::string_view a, std::string_view b) {
  const std::pair<std::string_view, std::string_view> p[] = {{a, b}};
  return encode_pair_batch(make(j), p)[0];
}

TEST(WordPiece, Truncation) {
  json j = tiny_bert();
  // LongestFirst: 3 + 8 tokens into 10 - 3 special = 7: the shorter text keeps its 3.
  j["truncation"] = {{"max_length", 10}, {"strategy", "LongestFirst"}, {"stride", 0}, {"direction", "Right"}};
  const std::string eight = "a a a a a a a a", three = "hello hello hello";
  EXPECT_EQ(one_pair(j, three, eight).ids, (std::vector<int32_t>{2, 8, 8, 8, 3, 13, 13, 13, 13, 3}));
  // Both long: an equal share each (7 = 3 + 4, the second gets the odd one).
  EXPECT_EQ(one_pair(j, eight, eight).ids.size(), 10u);
  EXPECT_EQ(one_pair(j, eight, eight).type_ids, (std::vector<int32_t>{0, 0, 0, 0, 0, 1, 1, 1, 1, 1}));
  // A single text keeps max_length - 2 tokens: the first ones, or with Left the last ones.
  j["truncation"]["max_length"] = 6;
  const std::string_view text[] = {"hello world the cafe a a"};
  EXPECT_EQ(encode_batch(make(j), text)[0].ids, (std::vector<int32_t>{2, 8, 9, 15, 16, 3}));
  j["truncation"]["direction"] = "Left";
  EXPECT_EQ(encode_batch(make(j), text)[0].ids, (std::vector<int32_t>{2, 15, 16, 13, 13, 3}));
  // OnlySecond needs a pair (once something must go); OnlyFirst a first text long enough.
  j["truncation"]["strategy"] = "OnlySecond";
  EXPECT_THROW(encode_batch(make(j), text), Error);
  j["truncation"]["max_length"] = 10;
  j["truncation"]["strategy"] = "OnlyFirst";
  EXPECT_THROW(one_pair(j, "hello", eight), Error);
  EXPECT_EQ(one_pair(j, eight, "hello").ids, (std::vector<int32_t>{2, 13, 13, 13, 13, 13, 13, 3, 8, 3}));
  // A stride not below the cut length is an error, as in HF.
  j["truncation"] = {{"max_length", 5}, {"stride", 3}};
  EXPECT_THROW(encode_batch(make(j), text), Error);
  // Off: the whole text.
  EXPECT_EQ(encode_batch(make(j), text, {.truncate = false})[0].ids.size(), 8u);
}

TEST(WordPiece, Padding) {
  json j = tiny_bert();
  j["padding"] = {{"strategy", "BatchLongest"}, {"direction", "Right"}, {"pad_to_multiple_of", nullptr}, {"pad_id", 0},
                  {"pad_type_id", 0},           {"pad_token", "[PAD]"}};
  const std::string_view texts[] = {"hello", "hello world the"};
  std::vector<EncoderInput> rows = encode_batch(make(j), texts);
  EXPECT_EQ(rows[0].ids, (std::vector<int32_t>{2, 8, 3, 0, 0}));
  EXPECT_EQ(rows[0].attention_mask, (std::vector<int32_t>{1, 1, 1, 0, 0}));
  EXPECT_EQ(rows[1].attention_mask, std::vector<int32_t>(5, 1));
  j["padding"]["direction"] = "Left";
  j["padding"]["pad_to_multiple_of"] = 4;
  j["padding"]["pad_id"] = 4;
  j["padding"]["pad_type_id"] = 1;
  rows = encode_batch(make(j), texts);
  EXPECT_EQ(rows[0].ids, (std::vector<int32_t>{4, 4, 4, 4, 4, 2, 8, 3}));
  EXPECT_EQ(rows[0].type_ids, (std::vector<int32_t>{1, 1, 1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(rows[1].attention_mask, (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 1, 1}));
  j["padding"]["strategy"] = {{"Fixed", 6}};
  j["padding"]["pad_to_multiple_of"] = nullptr;
  EXPECT_EQ(encode_batch(make(j), texts)[1].ids.size(), 6u);
  EXPECT_EQ(encode_batch(make(j), texts, {.pad = false})[0].ids.size(), 3u);
  EXPECT_TRUE(encode_batch(make(j), std::span<const std::string_view>()).empty());
}

// Each edit of a valid document makes it invalid in one place; the error must say what is wrong.
TEST(WordPiece, MalformedDocumentsGiveClearErrors) {
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& j) { j["model"].erase("vocab"); }, "has no \"vocab\""},
      {[](json& j) { j["model"]["vocab"] = json::array(); }, "model.vocab must be an object"},
      {[](json& j) { j["model"]["vocab"]["hello"] = "x"; }, "invalid id"},
      {[](json& j) { j["model"]["unk_token"] = "[NOPE]"; }, "WordPiece unk_token '[NOPE]' is not in the vocabulary"},
      {[](json& j) { j["model"]["unk_token"] = 7; }, "model.unk_token must be a string"},
      {[](json& j) { j["model"]["max_input_chars_per_word"] = -1; }, "max_input_chars_per_word must be a non-negative"},
      {[](json& j) { j["model"]["max_input_chars_per_word"] = 0; }, "max_input_chars_per_word must be > 0"},
      {[](json& j) { j["model"]["continuing_subword_prefix"] = 5; }, "continuing_subword_prefix must be a string"},
      {[](json& j) { j["model"]["type"] = "Unigram"; }, "model type 'Unigram' is not supported"},
      {[](json& j) { j["normalizer"]["lowercase"] = "yes"; }, "\"lowercase\" must be true or false"},
      {[](json& j) {
         j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {j["normalizer"], {{"type", "NFC"}}}}};
       },
       "BertNormalizer together with other normalizers"},
      {[](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers", {j["pre_tokenizer"], {{"type", "Digits"}, {"individual_digits", true}}}}};
       },
       "BertPreTokenizer together with other pre-tokenizers"},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "ByteLevel"}};
       },
       "WordPiece with ByteLevel"},
      {[](json& j) { j["decoder"]["prefix"] = 3; }, "prefix must be a string"},
      {[](json& j) { j["post_processor"]["single"] = "[CLS] $A [SEP]"; }, "TemplateProcessing.single must be an array"},
      {[](json& j) { j["post_processor"]["pair"][1]["Sequence"]["id"] = "C"; }, "sequence 'C' is not A or B"},
      {[](json& j) { j["post_processor"]["pair"][1]["Sequence"]["type_id"] = -1; }, "must be a token id"},
      {[](json& j) { j["post_processor"]["special_tokens"]["[CLS]"]["ids"] = json::array(); },
       "must map to a list of ids"},
      {[](json& j) {
         j["post_processor"]["special_tokens"].erase("[SEP]");
         j["post_processor"]["single"][2]["SpecialToken"]["id"] = "[NOPE]";
       },
       "TemplateProcessing token '[NOPE]' is not in the vocabulary"},
      {[](json& j) {
         j["post_processor"] = {{"type", "BertProcessing"}, {"sep", "[SEP]"}, {"cls", {"[CLS]", 2}}};
       },
       "BertProcessing sep must be [token, id]"},
      {[](json& j) { j["post_processor"]["special_tokens"]["[CLS]"]["ids"] = {99999}; }, "outside the vocabulary"},
      {[](json& j) {
         j["truncation"] = {{"max_length", -1}};
       },
       "truncation.max_length must be a non-negative integer"},
      {[](json& j) {
         j["truncation"] = {{"max_length", 8}, {"strategy", "Middle"}};
       },
       "unknown truncation strategy"},
      {[](json& j) {
         j["truncation"] = {{"max_length", 8}, {"direction", "Up"}};
       },
       "unknown truncation direction"},
      {[](json& j) {
         j["padding"] = {{"strategy", "Longest"}};
       },
       "padding.strategy must be"},
      {[](json& j) {
         j["padding"] = {{"strategy", {{"Fixed", 0}}}};
       },
       "padding to a fixed length of 0"},
      {[](json& j) {
         j["padding"] = {{"strategy", "BatchLongest"}, {"pad_id", "x"}};
       },
       "padding.pad_id must be a token id"},
      {[](json& j) {
         j["padding"] = {{"strategy", "BatchLongest"}, {"pad_id", 99999}};
       },
       "padding id 99999 is outside"},
  };
  for (const auto& [edit, message] : cases) {
    json j = tiny_bert();
    edit(j);
    SCOPED_TRACE(message);
    try {
      (void)spec_from_tokenizer_json(j);
      ADD_FAILURE() << "no error for " << j.dump().substr(0, 200);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
  // A BPE model with BERT's pieces is refused rather than half supported.
  json j = tiny_bert();
  j["model"] = {{"type", "BPE"}, {"vocab", j["model"]["vocab"]}, {"merges", json::array({"u n"})}};
  EXPECT_THROW(spec_from_tokenizer_json(j), Error);
}

// Random byte edits of a valid document: parsing either fails with kestrel::Error (or a JSON parse
// error) or gives a tokenizer that encodes and decodes; nothing else may happen (ASan/UBSan watch too).
TEST(WordPiece, MutatedDocumentsNeverCrash) {
  const std::string valid = tiny_bert().dump();
  std::mt19937 rng(20240520);
  const char bytes[] = "{}[]\",:0123456789-eE.tfn \\axyz#";
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string doc = valid;
    for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) {
      const size_t pos = rng() % doc.size();
      switch (rng() % 3) {
        case 0: doc[pos] = bytes[rng() % (sizeof(bytes) - 1)]; break;
        case 1: doc.erase(pos, 1 + rng() % 8); break;
        default: doc.insert(pos, 1, bytes[rng() % (sizeof(bytes) - 1)]); break;
      }
    }
    const json j = json::parse(doc, nullptr, false);
    if (j.is_discarded()) continue;
    ++parsed;
    try {
      const Tokenizer tok(spec_from_tokenizer_json(j));
      const std::string_view texts[] = {"Hello, world! unaffable [MASK] 中文", ""};
      const std::pair<std::string_view, std::string_view> pairs[] = {{texts[0], texts[0]}};
      for (const EncoderInput& r : encode_batch(tok, texts)) (void)tok.decode(r.ids);
      (void)encode_pair_batch(tok, pairs);
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 100);
}

}  // namespace
}  // namespace kestrel
