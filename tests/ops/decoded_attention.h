// Attention over a host KV layer of any format held to a double-precision causal softmax over the rows the
// layer decodes to (ops::kv_load), on every CPU variant: the windowed and per-channel page tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/backends.h"
#include "ops/ops.h"

namespace kestrel::ops {

// q: f32 [T, H, head_dim].
inline void expect_attention_over_decoded_rows(const KvLayer& l, const Tensor& q, const AttentionBatch& batch) {
  const int64_t H = q.dim(1), D = q.dim(2), hkv = l.k.dim(2), row = hkv * D, bs = l.block_size();
  std::vector<double> want(static_cast<size_t>(q.numel()), 0.0);
  for (const AttentionSeq& s : batch.seqs) {
    std::vector<float> keys(s.kv_len * row), vals(s.kv_len * row);
    for (int32_t p = 0; p < s.kv_len; ++p) {
      const int64_t slot = int64_t{s.block_table[p / bs]} * bs + p % bs;
      kv_load(l, false, slot, keys.data() + p * row);
      kv_load(l, true, slot, vals.data() + p * row);
    }
    for (int32_t i = 0; i < s.q_len; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / (H / hkv), t = s.q_begin + i;
        const int32_t n = s.kv_len - s.q_len + i + 1;
        std::vector<double> w(n);
        double mx = -INFINITY, sum = 0;
        for (int32_t p = 0; p < n; ++p) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += double(q.ptr<float>()[(t * H + h) * D + d]) * keys[p * row + kvh * D + d];
          w[p] = dot * batch.scale;
          mx = std::max(mx, w[p]);
        }
        for (double& e : w) sum += (e = std::exp(e - mx));
        for (int32_t p = 0; p < n; ++p)
          for (int64_t d = 0; d < D; ++d) want[(t * H + h) * D + d] += w[p] / sum * vals[p * row + kvh * D + d];
      }
  }
  for (const char* forced : {"", "cpu.ref"}) {
    Context ctx = backends::make_context(Device::Cpu);
    if (*forced) ctx.forced["attention"] = forced;
    Tensor out = Tensor::empty_host(DType::F32, q.shape);
    attention(ctx, q, l, batch, out);
    for (int64_t i = 0; i < out.numel(); ++i) ASSERT_NEAR(out.ptr<float>()[i], want[i], 1e-4) << forced << " " << i;
  }
}

}  // namespace kestrel::ops
