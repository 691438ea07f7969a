// Matmul driver: quantize the activations once per call into BlockQ8x32 (quantized weights) and let
// the threads split the output features, each sweeping its columns in L1-sized panels so that every
// weight block is loaded once per tile of kMaxTileRows activation rows.
#include <algorithm>
#include <vector>

#include "backends/cpu/fast_ops.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace kestrel::backends::cpu {
namespace {

// Below this many multiply-adds a call is cheaper on one thread than the fork/join.
constexpr int64_t kMinParallelMacs = 1 << 15;
// Weight bytes per panel: a panel stays in L1 (32 KiB here) next to a tile of activation rows.
constexpr size_t kPanelBytes = 16 << 10;

}  // namespace

bool all_f32(std::initializer_list<const Tensor*> ts, std::string* why) {
  for (const Tensor* t : ts)
    if (t->dtype != DType::F32) {
      if (why) *why = "needs f32, got " + t->describe();
      return false;
    }
  return true;
}

bool matmul_supports(const Kernels& k, const ops::MatmulArgs& a, std::string* why) {
  if (!k.available()) {
    if (why) *why = std::string("this CPU lacks the ") + k.name + " instructions";
    return false;
  }
  if (!all_f32({&a.x, &a.y}, why)) return false;
  if (a.bias && (a.bias->dtype != DType::F32 || a.bias->numel() != a.w.rows())) {
    if (why) *why = "bias must be f32 [N], got " + a.bias->describe();
    return false;
  }
  if (!k.dot[static_cast<size_t>(a.w.dtype)]) {
    if (why) *why = "no kernel for " + a.w.describe() + " weights";
    return false;
  }
  return true;
}

void matmul(const Kernels& k, const ops::MatmulArgs& a, const ops::Context& ctx) {
  const int64_t m_rows = a.x.rows(), kdim = a.x.cols(), n_cols = a.w.rows();
  KS_CHECK(a.w.cols() == kdim && a.y.rows() == m_rows && a.y.cols() == n_cols, "matmul shape mismatch: x {} w {} y {}",
           a.x.describe(), a.w.describe(), a.y.describe());
  KS_CHECK(a.x.data != a.y.data, "matmul output must not alias its input");
  const DotTileFn dot = k.dot[static_cast<size_t>(a.w.dtype)];
  ThreadPool& pool = ctx.threads();
  const bool parallel = m_rows * n_cols * kdim >= kMinParallelMacs && pool.size() > 1;

  const void* x = a.x.data;
  size_t x_stride = static_cast<size_t>(kdim) * sizeof(float);
  thread_local std::vector<BlockQ8x32> xq;  // the caller's; workers only read it during the call
  if (weight_uses_q8(a.w.dtype)) {
    const int64_t blocks = kdim / 32;
    xq.resize(static_cast<size_t>(m_rows * blocks));
    BlockQ8x32* q = xq.data();
    auto quantize = [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) k.quantize_q8x32(a.x.ptr<float>() + r * kdim, q + r * blocks, kdim);
    };
    if (parallel && m_rows > 1)
      pool.parallel_for(m_rows, quantize);
    else
      quantize(0, m_rows);
    x = q;
    x_stride = static_cast<size_t>(blocks) * sizeof(BlockQ8x32);
  }

  const size_t w_row = a.w.row_nbytes();
  const int64_t panel = std::max<int64_t>(1, static_cast<int64_t>(kPanelBytes / w_row));
  float* y = a.y.ptr<float>();
  const float* bias = a.bias ? a.bias->ptr<float>() : nullptr;
  auto columns = [&](int64_t n0, int64_t n1) {
    for (int64_t p0 = n0; p0 < n1; p0 += panel) {
      const int64_t p1 = std::min(n1, p0 + panel);
      for (int64_t m = 0; m < m_rows; m += kMaxTileRows) {
        const int nx = static_cast<int>(std::min<int64_t>(kMaxTileRows, m_rows - m));
        const void* xm = static_cast<const char*>(x) + m * x_stride;
        for (int64_t n = p0; n < p1; ++n) dot(kdim, a.w.row(n), xm, x_stride, nx, y + m * n_cols + n, n_cols);
      }
    }
    if (bias)
      for (int64_t m = 0; m < m_rows; ++m)
        for (int64_t n = n0; n < n1; ++n) y[m * n_cols + n] += bias[n];
  };
  if (parallel)
    pool.run([&](int t, int nt) { columns(n_cols * t / nt, n_cols * (t + 1) / nt); });
  else
    columns(0, n_cols);
}

}  // namespace kestrel::backends::cpu
