// Matmul driver: quantize the activations once per call into BlockQ8x32 or BlockQ16x32 (quantized
// weights; the variant chooses) and let the threads split the output features, each sweeping its columns in L1-sized
// panels so that every weight block is loaded once per tile of kMaxTileRows activation rows. Grouped integer
// and W8A8 weights (core/linear.h) have no integer dot kernels yet: their rows are decoded to f32 panels and
// multiply the f32 activations (W8A8: quantized per row first).
#include <algorithm>
#include <vector>

#include "backends/cpu/fast_ops.h"
#include "core/error.h"
#include "core/linear.h"
#include "core/thread_pool.h"
#include "core/w8a8.h"

namespace kestrel::backends::cpu {
namespace {

// Below this many multiply-adds a call is cheaper on one thread than the fork/join.
constexpr int64_t kMinParallelMacs = 1 << 15;
// Weight bytes per panel: a panel stays in L1 (32 KiB here) next to a tile of activation rows.
constexpr size_t kPanelBytes = 16 << 10;
// Activation bytes a sweep of the panels reuses: a chunk of x's rows that stays in L2 while every panel of
// the thread's columns passes over it (an encoder batch's x, thousands of rows, would otherwise stream from
// memory once per panel).
constexpr size_t kRowChunkBytes = 256 << 10;

// The caller's buffers for quantized activations; workers only read them during the call.
thread_local std::vector<BlockQ8x32> xq8;
thread_local std::vector<BlockQ16x32> xq16;

// Quantizes every row of x (f32 [M, K], K % 32 == 0) into buf, rows in parallel when worthwhile.
template <class XBlock>
const XBlock* quantize_rows(void (*quantize)(const float*, XBlock*, int64_t), const Tensor& x, std::vector<XBlock>& buf,
                            ThreadPool& pool, bool parallel) {
  const int64_t m_rows = x.rows(), kdim = x.cols(), blocks = kdim / 32;
  buf.resize(static_cast<size_t>(m_rows * blocks));
  XBlock* q = buf.data();
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) quantize(x.ptr<float>() + r * kdim, q + r * blocks, kdim);
  };
  if (parallel && m_rows > 1)
    pool.parallel_for(m_rows, rows);
  else
    rows(0, m_rows);
  return q;
}

// The weight type the dot kernels see: grouped integer rows are decoded to f32 first.
DType dot_type(const Linear& w) {
  return w.dense() ? w.weight.dtype : DType::F32;
}

// The threads split the output columns; each sweeps its columns in panels of `panel` weight rows, so that every
// row is loaded once per tile of kMaxTileRows activation rows of a chunk of rows (kRowChunkBytes).
// panel_rows(p0, p1) readies a panel and returns where the dot kernel reads each of its rows. Chunks hold
// whole tiles, so every output comes from the same tile of rows as without them: a row's result does not
// depend on how many rows the call has.
template <class PanelRows>
void sweep_columns(DotTileFn dot, const ops::MatmulArgs& a, const void* x, size_t x_stride, int64_t panel,
                   ThreadPool& pool, bool parallel, const PanelRows& panel_rows) {
  const int64_t m_rows = a.x.rows(), kdim = a.x.cols(), n_cols = a.w.out_features();
  float* y = a.y.ptr<float>();
  const float* bias = a.bias ? a.bias->ptr<float>() : nullptr;
  const int64_t chunk =
      std::max<int64_t>(1, static_cast<int64_t>(kRowChunkBytes / x_stride) / kMaxTileRows) * kMaxTileRows;
  auto columns = [&](int64_t n0, int64_t n1) {
    for (int64_t c0 = 0; c0 < m_rows; c0 += chunk) {
      const int64_t c1 = std::min(m_rows, c0 + chunk);
      for (int64_t p0 = n0; p0 < n1; p0 += panel) {
        const int64_t p1 = std::min(n1, p0 + panel);
        const auto row = panel_rows(p0, p1);
        for (int64_t m = c0; m < c1; m += kMaxTileRows) {
          const int nx = static_cast<int>(std::min<int64_t>(kMaxTileRows, c1 - m));
          const void* xm = static_cast<const char*>(x) + m * x_stride;
          for (int64_t n = p0; n < p1; ++n) dot(kdim, row(n), xm, x_stride, nx, y + m * n_cols + n, n_cols);
        }
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

// Grouped integer and W8A8 weights: each thread decodes a panel of its rows to f32 (core's row decoder) for
// the float dot tiles, so a row is decoded once per call. W8A8 multiplies x's rows as they quantize
// (core/w8a8.h: code values times the row's scale, in f32), so the products are the format's up to the
// order of rounding.
void decoded_matmul(DotTileFn dot, const ops::MatmulArgs& a, ThreadPool& pool, bool parallel) {
  const int64_t kdim = a.x.cols();
  const size_t f32_row = static_cast<size_t>(kdim) * sizeof(float);
  const int64_t panel = std::max<int64_t>(1, static_cast<int64_t>(kPanelBytes / f32_row));
  const void* x = a.x.data;
  if (a.w.scaled()) {
    thread_local std::vector<float> xq;
    xq.resize(static_cast<size_t>(a.x.numel()));
    const bool fp8 = a.w.weight.dtype == DType::F8E4M3;
    float* q = xq.data();  // the caller's buffer: a worker naming xq would get its own thread's
    auto rows = [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) w8_fake_quantize_row(a.x.ptr<float>() + m * kdim, kdim, fp8, q + m * kdim);
    };
    if (parallel && a.x.rows() > 1)
      pool.parallel_for(a.x.rows(), rows);
    else
      rows(0, a.x.rows());
    x = q;
  }
  sweep_columns(dot, a, x, f32_row, panel, pool, parallel, [&](int64_t p0, int64_t p1) {
    thread_local std::vector<float> rows;
    rows.resize(static_cast<size_t>(panel * kdim));
    for (int64_t n = p0; n < p1; ++n) dequantize_row(a.w, n, rows.data() + (n - p0) * kdim);
    const float* decoded = rows.data();
    return [decoded, p0, kdim](int64_t n) -> const void* { return decoded + (n - p0) * kdim; };
  });
}

}  // namespace

bool all_f32(std::initializer_list<const Tensor*> ts, std::string* why) {
  for (const Tensor* t : ts)
    if (t->dtype != DType::F32) {
      if (why) *why = "needs f32, got " + t->describe();
      return false;
    }
  return true;
}

bool matmul_supports(const Kernels& k, ActFormat f, const ops::MatmulArgs& a, std::string* why) {
  if (!k.available()) {
    if (why) *why = std::string("this CPU lacks the ") + k.name + " instructions";
    return false;
  }
  if (!all_f32({&a.x, &a.y}, why)) return false;
  if (a.bias && (a.bias->dtype != DType::F32 || a.bias->numel() != a.w.out_features())) {
    if (why) *why = "bias must be f32 [N], got " + a.bias->describe();
    return false;
  }
  if (a.w.layout != WeightLayout::Rows) {
    if (why) *why = "these kernels read weights in rows";
    return false;
  }
  if (!k.dots(f)[static_cast<size_t>(dot_type(a.w))]) {
    if (why) *why = "no kernel for " + a.w.describe() + " weights";
    return false;
  }
  return true;
}

void matmul(const Kernels& k, ActFormat f, const ops::MatmulArgs& a, const ops::Context& ctx) {
  const int64_t m_rows = a.x.rows(), kdim = a.x.cols(), n_cols = a.w.out_features();
  KS_CHECK(a.w.in_features() == kdim && a.y.rows() == m_rows && a.y.cols() == n_cols,
           "matmul shape mismatch: x {} w {} y {}", a.x.describe(), a.w.describe(), a.y.describe());
  KS_CHECK(a.x.data != a.y.data, "matmul output must not alias its input");
  const DotTileFn dot = k.dots(f)[static_cast<size_t>(dot_type(a.w))];
  ThreadPool& pool = ctx.threads();
  const bool parallel = m_rows * n_cols * kdim >= kMinParallelMacs && pool.size() > 1;
  if (!a.w.dense()) return decoded_matmul(dot, a, pool, parallel);
  const Tensor& w = a.w.weight;

  const void* x = a.x.data;
  size_t x_stride = static_cast<size_t>(kdim) * sizeof(float);
  if (weight_uses_q8(w.dtype)) {
    const int64_t blocks = kdim / 32;
    if (f == ActFormat::Q16) {
      x = quantize_rows(k.quantize_q16x32, a.x, xq16, pool, parallel);
      x_stride = static_cast<size_t>(blocks) * sizeof(BlockQ16x32);
    } else {
      x = quantize_rows(k.quantize_q8x32, a.x, xq8, pool, parallel);
      x_stride = static_cast<size_t>(blocks) * sizeof(BlockQ8x32);
    }
  }

  const int64_t panel = std::max<int64_t>(1, static_cast<int64_t>(kPanelBytes / w.row_nbytes()));
  sweep_columns(dot, a, x, x_stride, panel, pool, parallel,
                [&w](int64_t, int64_t) { return [&w](int64_t n) -> const void* { return w.row(n); }; });
}

}  // namespace kestrel::backends::cpu
