#include "tokenizer/encoder_inputs.h"

#include <algorithm>
#include <optional>

#include "core/error.h"

namespace kestrel {
namespace {

// The template when tokenizer.json has no post-processor (or the spec came from GGUF): BOS/EOS around a
// single text as encode() adds them; a pair is A then B with type ids 0 and 1, as HF does without one.
PostTemplate default_template(const TokenizerSpec& spec) {
  PostTemplate t;
  if (spec.add_bos && spec.bos_id >= 0) t.single.push_back({-1, {spec.bos_id}, 0});
  t.single.push_back({0, {}, 0});
  if (spec.add_eos && spec.eos_id >= 0) t.single.push_back({-1, {spec.eos_id}, 0});
  t.pair = {{0, {}, 0}, {1, {}, 1}};
  return t;
}

size_t special_token_count(const std::vector<TemplatePiece>& pieces) {
  size_t n = 0;
  for (const TemplatePiece& p : pieces) n += p.ids.size();
  return n;
}

// HF's Encoding::truncate: keeps max_len tokens from the start (or the end).
void truncate_to(std::vector<int32_t>& ids, size_t max_len, const Truncation& t) {
  if (max_len >= ids.size()) return;
  if (max_len > 0)
    KS_CHECK(t.stride < max_len, "tokenizer: truncation stride {} must be below the {} tokens a text is cut to",
             t.stride, max_len);
  if (t.from_left)
    ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(max_len));
  else
    ids.resize(max_len);
}

// HF's truncate_encodings: `b` is null for a single text.
void truncate(std::vector<int32_t>& a, std::vector<int32_t>* b, size_t max_length, const Truncation& t) {
  const size_t total = a.size() + (b ? b->size() : 0);
  if (total <= max_length) return;
  if (max_length == 0) {
    a.clear();
    if (b) b->clear();
    return;
  }
  const size_t to_remove = total - max_length;
  if (t.strategy == TruncationStrategy::longest_first) {
    if (b == nullptr) {
      truncate_to(a, max_length, t);
      return;
    }
    // Both texts get an equal share of max_length, except that a shorter one keeps all it needs.
    size_t n1 = a.size(), n2 = b->size();
    const bool swapped = n1 > n2;
    if (swapped) std::swap(n1, n2);
    n2 = n1 > max_length ? n1 : std::max(n1, max_length - n1);
    if (n1 + n2 > max_length) {
      n1 = max_length / 2;
      n2 = n1 + max_length % 2;
    }
    if (swapped) std::swap(n1, n2);
    truncate_to(a, n1, t);
    truncate_to(*b, n2, t);
    return;
  }
  std::vector<int32_t>* target = t.strategy == TruncationStrategy::only_first ? &a : b;
  KS_CHECK(target != nullptr, "tokenizer: truncation OnlySecond needs a pair of texts");
  KS_CHECK(target->size() > to_remove,
           "tokenizer: truncation {}: the text has {} tokens but {} must go to fit max_length {}",
           t.strategy == TruncationStrategy::only_first ? "OnlyFirst" : "OnlySecond", target->size(), to_remove,
           max_length);
  truncate_to(*target, target->size() - to_remove, t);
}

EncoderInput build_row(const std::vector<TemplatePiece>& pieces, const std::vector<int32_t>* texts[2],
                       bool add_special) {
  EncoderInput row;
  for (const TemplatePiece& p : pieces) {
    if (p.sequence < 0 && !add_special) continue;
    const std::vector<int32_t>& ids = p.sequence < 0 ? p.ids : *texts[p.sequence];
    row.ids.insert(row.ids.end(), ids.begin(), ids.end());
    row.type_ids.insert(row.type_ids.end(), ids.size(), p.type_id);
  }
  row.attention_mask.assign(row.ids.size(), 1);
  return row;
}

// HF's pad_encodings: every row to the batch's length (fixed or longest), rounded up to a multiple.
void pad(std::vector<EncoderInput>& rows, const Padding& p) {
  size_t length = p.fixed_length;
  if (length == 0)
    for (const EncoderInput& r : rows) length = std::max(length, r.ids.size());
  if (p.multiple_of > 0 && length % p.multiple_of != 0) length += p.multiple_of - length % p.multiple_of;
  for (EncoderInput& r : rows) {
    if (r.ids.size() >= length) continue;
    const size_t n = length - r.ids.size();
    auto fill = [&](std::vector<int32_t>& v, int32_t value) { v.insert(p.left ? v.begin() : v.end(), n, value); };
    fill(r.ids, p.pad_id);
    fill(r.type_ids, p.pad_type_id);
    fill(r.attention_mask, 0);
  }
}

std::vector<EncoderInput> encode_rows(const Tokenizer& tokenizer, std::span<const std::string_view> first,
                                      std::span<const std::string_view> second, const EncoderInputOptions& options) {
  const TokenizerSpec& spec = tokenizer.spec();
  const PostTemplate tmpl = spec.post_template ? *spec.post_template : default_template(spec);
  const bool pairs = !second.empty();
  const std::vector<TemplatePiece>& pieces = pairs ? tmpl.pair : tmpl.single;
  KS_CHECK(!pieces.empty(), "tokenizer: the post-processor has no template for {}", pairs ? "pairs" : "one text");
  std::optional<Truncation> truncation = spec.truncation;
  if (options.max_length > 0) truncation = Truncation{.max_length = options.max_length};
  std::optional<size_t> max_length;
  // Room is left for the special tokens. With fewer than that HF's unsigned subtraction wraps around and
  // nothing is truncated; so it is here, to give the same inputs.
  const size_t added = options.add_special ? special_token_count(pieces) : 0;
  if (options.truncate && truncation && truncation->max_length >= added) max_length = truncation->max_length - added;
  std::vector<EncoderInput> rows;
  rows.reserve(first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    std::vector<int32_t> a = tokenizer.encode(first[i], false, true), b;
    if (pairs) b = tokenizer.encode(second[i], false, true);
    if (max_length) truncate(a, pairs ? &b : nullptr, *max_length, *truncation);
    const std::vector<int32_t>* texts[2] = {&a, &b};
    rows.push_back(build_row(pieces, texts, options.add_special));
  }
  if (options.pad && spec.padding) pad(rows, *spec.padding);
  return rows;
}

}  // namespace

std::vector<EncoderInput> encode_batch(const Tokenizer& tokenizer, std::span<const std::string_view> texts,
                                       const EncoderInputOptions& options) {
  return encode_rows(tokenizer, texts, {}, options);
}

std::vector<EncoderInput> encode_pair_batch(const Tokenizer& tokenizer,
                                            std::span<const std::pair<std::string_view, std::string_view>> pairs,
                                            const EncoderInputOptions& options) {
  std::vector<std::string_view> first, second;
  for (const auto& [a, b] : pairs) {
    first.push_back(a);
    second.push_back(b);
  }
  if (pairs.empty()) return {};
  return encode_rows(tokenizer, first, second, options);
}

}  // namespace kestrel
