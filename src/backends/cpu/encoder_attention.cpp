// Bidirectional attention for encoders on the CPU: one task per (sequence, head), each query row's scores
// over its sequence's keys held whole (encoder sequences are at most a few hundred tokens), f32 throughout.
// A row's result depends only on its own sequence, so batching texts does not change an embedding.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/fast_ops.h"
#include "core/thread_pool.h"

namespace kestrel::backends::cpu {

bool encoder_attention_supports(const ops::EncoderAttentionArgs& a, std::string* why) {
  return all_f32({&a.qkv, &a.out}, why);
}

void encoder_attention(const ops::EncoderAttentionArgs& a, const ops::Context& ctx) {
  const int64_t H = a.out.dim(1), D = a.out.dim(2), row = 3 * H * D;
  const auto& seqs = a.batch.seqs;
  const float* qkv = a.qkv.ptr<float>();
  const int32_t* mask = a.batch.key_mask.empty() ? nullptr : a.batch.key_mask.ptr<int32_t>();
  auto run = [&](int64_t b, int64_t e) {
    std::vector<float> p;
    for (int64_t task = b; task < e; ++task) {
      const ops::EncoderSeq& s = seqs[task / H];
      const int64_t h = task % H;
      p.resize(s.len);
      for (int64_t i = s.begin; i < s.begin + s.len; ++i) {
        const float* q = qkv + i * row + h * D;
        float mx = -INFINITY;
        for (int64_t j = 0; j < s.len; ++j) {
          const bool masked = mask && mask[s.begin + j] == 0;
          const float* k = qkv + (s.begin + j) * row + H * D + h * D;
          p[j] = masked
                     ? -INFINITY
                     : static_cast<float>(partial_sums(D, [q, k](int64_t d) { return q[d] * k[d]; })) * a.batch.scale;
          mx = std::max(mx, p[j]);
        }
        float* o = a.out.ptr<float>() + (i * H + h) * D;
        std::fill(o, o + D, 0.f);
        if (mx == -INFINITY) continue;  // no key to attend to: zeros, as the reference
        float sum = 0;
        for (int64_t j = 0; j < s.len; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (int64_t j = 0; j < s.len; ++j) {
          if (p[j] == 0.f) continue;
          const float* v = qkv + (s.begin + j) * row + 2 * H * D + h * D;
          for (int64_t d = 0; d < D; ++d) o[d] += p[j] * v[d];
        }
        const float inv = 1.f / sum;
        for (int64_t d = 0; d < D; ++d) o[d] *= inv;
      }
    }
  };
  const int64_t tasks = static_cast<int64_t>(seqs.size()) * H;
  if (tasks < 2)
    run(0, tasks);
  else
    ctx.threads().parallel_for(tasks, run);
}

}  // namespace kestrel::backends::cpu
