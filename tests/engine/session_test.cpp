// Session::feed_logits_from: the rows it returns are the same bits as those of feed(all_logits) from
// `from` on, whatever chunk `from` falls in (chunks before it compute no logits at all).
#include "engine/session.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "../model/test_paths.h"
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

}  // namespace
}  // namespace kestrel
