// The synthetic models' tokenizer: a byte-level BPE over the GPT-2 byte alphabet, merges that build a
// few hundred common English words (so ordinary text gets multi-byte tokens), unique filler tokens up
// to the preset's vocabulary, and the family's special tokens and chat template at the top ids.
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/synth.h"

namespace kestrel {
namespace {

using json = nlohmann::json;

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map to U+0100 upwards.
std::vector<std::string> byte_symbols() {
  std::vector<std::string> sym(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    sym[b] = utf8(printable ? b : next++);
  }
  return sym;
}

constexpr const char* kWords[] = {
    "the",       "of",       "and",      "to",      "in",        "is",      "that",      "it",        "was",
    "for",       "on",       "are",      "as",      "with",      "his",     "they",      "at",        "be",
    "this",      "from",     "have",     "or",      "by",        "one",     "had",       "not",       "but",
    "what",      "all",      "were",     "when",    "we",        "there",   "can",       "an",        "your",
    "which",     "their",    "said",     "if",      "do",        "will",    "each",      "about",     "how",
    "up",        "out",      "them",     "then",    "she",       "many",    "some",      "so",        "these",
    "would",     "other",    "into",     "has",     "more",      "her",     "two",       "like",      "him",
    "see",       "time",     "could",    "no",      "make",      "than",    "first",     "been",      "its",
    "who",       "now",      "people",   "my",      "made",      "over",    "did",       "down",      "only",
    "way",       "find",     "use",      "may",     "water",     "long",    "little",    "very",      "after",
    "words",     "called",   "just",     "where",   "most",      "know",    "get",       "through",   "back",
    "much",      "before",   "go",       "good",    "new",       "write",   "our",       "used",      "me",
    "man",       "too",      "any",      "day",     "same",      "right",   "look",      "think",     "also",
    "around",    "another",  "came",     "come",    "work",      "three",   "word",      "must",      "because",
    "does",      "part",     "even",     "place",   "well",      "such",    "here",      "take",      "why",
    "things",    "help",     "put",      "years",   "different", "away",    "again",     "off",       "went",
    "old",       "number",   "great",    "tell",    "men",       "say",     "small",     "every",     "found",
    "still",     "between",  "name",     "should",  "home",      "big",     "give",      "air",       "line",
    "set",       "own",      "under",    "read",    "last",      "never",   "us",        "left",      "end",
    "along",     "while",    "might",    "next",    "sound",     "below",   "saw",       "something", "thought",
    "both",      "few",      "those",    "always",  "looked",    "show",    "large",     "often",     "together",
    "asked",     "house",    "world",    "going",   "want",      "school",  "important", "until",     "form",
    "food",      "keep",     "children", "feet",    "land",      "side",    "without",   "boy",       "once",
    "animals",   "life",     "enough",   "took",    "sometimes", "four",    "head",      "above",     "kind",
    "began",     "almost",   "live",     "page",    "got",       "earth",   "need",      "far",       "hand",
    "high",      "year",     "mother",   "light",   "parts",     "country", "father",    "let",       "night",
    "following", "picture",  "being",    "study",   "second",    "eyes",    "soon",      "times",     "story",
    "boys",      "since",    "white",    "days",    "ever",      "paper",   "hard",      "near",      "sentence",
    "better",    "best",     "across",   "during",  "today",     "others",  "however",   "sure",      "means",
    "knew",      "try",      "told",     "young",   "miles",     "sun",     "ways",      "thing",     "whole",
    "hear",      "example",  "heard",    "several", "change",    "answer",  "room",      "sea",       "against",
    "top",       "turned",   "learn",    "point",   "city",      "play",    "toward",    "five",      "using",
    "himself",   "usually",  "model",    "token",   "kestrel",   "engine",  "decode",    "prefill",   "attention",
    "memory",    "speed",    "fast",     "quick",   "brown",     "fox",     "jumps",     "lazy",      "dog",
    "hello",     "question", "language", "machine", "learning",  "data",    "system",
};

struct Family {
  std::vector<std::string> specials;
  std::string bos, eos;  // bos empty: none added
  std::string chat_template;
};

Family family_of(const SynthPreset& p) {
  if (p.model_type == "qwen2" || p.model_type == "qwen3")
    return {{"<|endoftext|>", "<|im_start|>", "<|im_end|>"},
            "",
            "<|im_end|>",
            "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
            "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"};
  if (p.model_type == "gemma3_text")
    return {{"<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"},
            "<bos>",
            "<end_of_turn>",
            "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + (message['role'] == 'assistant' and "
            "'model' or message['role']) + '\n' + message['content'] + '<end_of_turn>\n' }}{% endfor %}{% if "
            "add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"};
  if (p.model_type == "mistral")
    return {{"<s>", "</s>", "[INST]", "[/INST]"},
            "<s>",
            "</s>",
            "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
            "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"};
  return {{"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"},
          "<|begin_of_text|>",
          "<|eot_id|>",
          "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt "
          "%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"};
}

int special_id(const SynthPreset& p, const Family& f, const std::string& tok) {
  const int first = p.vocab - static_cast<int>(f.specials.size());
  for (size_t i = 0; i < f.specials.size(); ++i)
    if (f.specials[i] == tok) return first + static_cast<int>(i);
  KS_FAIL("synth: no special token '{}'", tok);
}

}  // namespace

json synth_tokenizer_json(const SynthPreset& p) {
  const Family fam = family_of(p);
  const int n_regular = p.vocab - static_cast<int>(fam.specials.size());
  KS_CHECK(n_regular >= 256, "synth: vocabulary {} is too small for 256 byte tokens and {} special tokens", p.vocab,
           fam.specials.size());
  const std::vector<std::string> sym = byte_symbols();
  json vocab = json::object();
  std::vector<std::string> order;  // tokens by id
  auto add_token = [&](const std::string& t) {
    vocab[t] = static_cast<int>(order.size());
    order.push_back(t);
  };
  for (const std::string& s : sym) add_token(s);

  // Each word, with a leading space ("Ġ") and bare, becomes a left-to-right chain of merges. Duplicates
  // (shared prefixes) are merged once; the chain stops when the vocabulary is full.
  json merges = json::array();
  std::set<std::string> seen(order.begin(), order.end());
  const std::string space = sym[' '];
  // Space-prefixed forms first: they are what running text mostly contains.
  for (const std::string& prefix : {space, std::string()}) {
    for (const char* w : kWords) {
      std::vector<std::string> pieces;
      if (!prefix.empty()) pieces.push_back(prefix);
      for (const char* c = w; *c; ++c) pieces.push_back(sym[static_cast<unsigned char>(*c)]);
      std::string acc = pieces[0];
      for (size_t i = 1; i < pieces.size() && static_cast<int>(order.size()) < n_regular; ++i) {
        const std::string next = acc + pieces[i];
        if (seen.insert(next).second) {
          merges.push_back(json::array({acc, pieces[i]}));
          add_token(next);
        }
        acc = next;
      }
    }
  }
  // Unreachable filler tokens pad the vocabulary to the preset's size (unique, never produced by merges).
  for (int i = 0; static_cast<int>(order.size()) < n_regular; ++i) add_token("<filler_" + std::to_string(i) + ">");

  json added = json::array();
  for (size_t i = 0; i < fam.specials.size(); ++i)
    added.push_back({{"id", n_regular + static_cast<int>(i)},
                     {"content", fam.specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});

  json post = nullptr;
  if (!fam.bos.empty()) {
    const int bos = special_id(p, fam, fam.bos);
    const json bos_piece = {{"SpecialToken", {{"id", fam.bos}, {"type_id", 0}}}};
    post = {{"type", "TemplateProcessing"},
            {"single", json::array({bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
            {"pair", json::array({bos_piece,
                                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                  bos_piece,
                                  {{"Sequence", {{"id", "B"}, {"type_id", 0}}}}})},
            {"special_tokens",
             {{fam.bos, {{"id", fam.bos}, {"ids", json::array({bos})}, {"tokens", json::array({fam.bos})}}}}}};
  }
  const char* regex =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array(
             {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}})}}},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}}};
}

json synth_tokenizer_config_json(const SynthPreset& p) {
  const Family fam = family_of(p);
  json decoder = json::object();
  for (const std::string& s : fam.specials)
    decoder[std::to_string(special_id(p, fam, s))] = {{"content", s},    {"lstrip", false},      {"normalized", false},
                                                      {"rstrip", false}, {"single_word", false}, {"special", true}};
  return {{"added_tokens_decoder", decoder},
          {"add_bos_token", !fam.bos.empty()},
          {"bos_token", fam.bos.empty() ? json(nullptr) : json(fam.bos)},
          {"eos_token", fam.eos},
          {"chat_template", fam.chat_template},
          {"clean_up_tokenization_spaces", false},
          {"model_max_length", p.max_pos},
          {"tokenizer_class", "PreTrainedTokenizerFast"}};
}

// Ids for config.json and generation_config.json.
std::pair<int, int> synth_bos_eos(const SynthPreset& p) {
  const Family fam = family_of(p);
  return {fam.bos.empty() ? -1 : special_id(p, fam, fam.bos), special_id(p, fam, fam.eos)};
}

}  // namespace kestrel
