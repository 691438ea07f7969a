// Session::feed_logits_from: the rows it returns are the same bits as those of feed(all_logits) from
// `from` on, whatever chunk `from` falls in (chunks before it compute no logits at all). Session::feed_embeddings
// with a sequence's own token embeddings, or with the residual stream a model cut after block 0 left, gives
// the full model's logits.
#include "engine/session.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "../formats/test_files.h"
#include "../model/test_paths.h"
#include "backends/backends.h"
#include "core/dequant.h"
#include "model/model.h"

namespace kestrel {
namespace {

TEST(Session, LogitsFromARowMatchAllLogits) {
  auto model = load_model(test::fixture("models/tiny-llama-f32.gguf"));
  const int64_t V = model->config().vocab;
  std::vector<int32_t> ids(37);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 29 + 3) % 300);
  const SessionOptions opt{.n_ctx = 64, .n_batch = 8};  // 5 chunks: 8, 8, 8, 8, 5
  Session all(*model->decoder, {}, opt);
  const Tensor want = all.feed(ids, /*all_logits=*/true);
  for (int64_t from : {0, 1, 7, 8, 9, 20, 32, 36}) {
    Session s(*model->decoder, {}, opt);
    const Tensor got = s.feed_logits_from(ids, from);
    ASSERT_EQ(got.rows(), static_cast<int64_t>(ids.size()) - from) << from;
    EXPECT_EQ(std::memcmp(got.data, want.row(from), got.nbytes()), 0) << "rows from " << from;
    EXPECT_EQ(s.length(), static_cast<int32_t>(ids.size()));
  }
  Session last(*model->decoder, {}, opt);
  const Tensor one = last.feed(ids);
  ASSERT_EQ(one.rows(), 1);
  EXPECT_EQ(std::memcmp(one.data, want.row(static_cast<int64_t>(ids.size()) - 1), one.nbytes()), 0);
}

// Keeps the residual stream after one block, row after row.
struct StreamKeeper final : ops::LinearObserver {
  int block = 0;
  std::vector<float> rows;
  void observe(const LinearId&, const Tensor&) override {}
  void residual(int layer, const Tensor& x) override {
    if (layer == block) rows.insert(rows.end(), x.ptr<float>(), x.ptr<float>() + x.numel());
  }
};

TEST(Session, EmbeddingsStandInForTokensAndForEarlierBlocks) {
  auto model = load_model(test::fixture("models/tiny-llama-f32.gguf"));
  const ModelConfig& c = model->config();
  ASSERT_EQ(c.n_layers, 2);
  std::vector<int32_t> ids(37);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 31 + 5) % 300);
  const std::vector<int32_t> placeholders(ids.size(), 0);
  const SessionOptions opt{.n_ctx = 64, .n_batch = 8};  // 5 chunks
  Session all(*model->decoder, {}, opt);
  const Tensor want = all.feed(ids, /*all_logits=*/true);

  // The tokens' own embedding rows.
  const Tensor& table = model->decoder->weights().tok_embd;
  std::vector<float> embedded(ids.size() * c.hidden);
  for (size_t i = 0; i < ids.size(); ++i) {
    float* row = &embedded[i * c.hidden];
    dequantize_row(table.dtype, table.row(ids[i]), row, c.hidden);
    for (int64_t j = 0; j < c.hidden; ++j) row[j] *= c.embed_scale;
  }
  Session by_rows(*model->decoder, {}, opt);
  const Tensor got = by_rows.feed_embeddings(placeholders, embedded, /*all_logits=*/true);
  ASSERT_EQ(got.nbytes(), want.nbytes());
  EXPECT_EQ(std::memcmp(got.data, want.data, want.nbytes()), 0);

  // Block 0 alone, keeping its output; then block 1 from it.
  Decoder first(model->decoder->architecture(), c, model->decoder->weights()),
      second(model->decoder->architecture(), c, model->decoder->weights());
  first.set_layers(0, 1);
  second.set_layers(1, 2);
  StreamKeeper keep;
  ops::Context ctx = backends::make_context(Device::Cpu);
  ctx.observer = &keep;
  Session s0(first, ctx, opt);
  s0.feed(ids);
  ASSERT_EQ(keep.rows.size(), ids.size() * c.hidden);
  Session s1(second, {}, opt);
  const Tensor chained = s1.feed_embeddings(placeholders, keep.rows, /*all_logits=*/true);
  ASSERT_EQ(chained.nbytes(), want.nbytes());
  EXPECT_EQ(std::memcmp(chained.data, want.data, want.nbytes()), 0);

  test::expect_error([&] { s1.feed_embeddings(placeholders, std::span(keep.rows).first(10)); },
                     {"feed_embeddings: 10 values for 37 tokens", fmt::format("needs {}", ids.size() * c.hidden)});
  s1.truncate(0);
  test::expect_error([&] { s1.feed(ids); }, {"block 1's input as embeddings"});
}

}  // namespace
}  // namespace kestrel
