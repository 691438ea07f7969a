// Embedding lookup: one block per token copies its table row, converting to the output type; and its
// counterpart for prompt embeddings, rows given to the step copied over the embedded ones.
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace kestrel::backends::cuda {
namespace {

template <typename Tin, typename Tout>
__global__ void embed_kernel(const Tin* table, int64_t vocab, int64_t dim, const int32_t* ids, Tout* out, float scale,
                             ErrorSink errors) {
  const int32_t id = ids[blockIdx.x];
  Tout* o = out + blockIdx.x * dim;
  const bool ok = id >= 0 && id < vocab;
  if (!ok && threadIdx.x == 0) raise_row_error(errors.words, errors.capacity, blockIdx.x, kErrTokenId);
  const Tin* row = table + (ok ? id : 0) * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = from_f32<Tout>(ok ? to_f32(row[i]) * scale : 0.f);
}

template <typename Tin>
void launch_from(const void* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n, DType out_t, void* out,
                 float scale, ErrorSink err, cudaStream_t s) {
  auto tab = static_cast<const Tin*>(table);
  if (out_t == DType::BF16)
    embed_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(tab, vocab, dim, ids, static_cast<bf16*>(out), scale, err);
  else
    embed_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(tab, vocab, dim, ids, static_cast<float*>(out), scale, err);
  CUDA_CHECK_LAUNCH();
}

// One block per source row; rows outside [0, t_rows) are skipped (the executor stages only valid ones).
template <typename T>
__global__ void scatter_rows_kernel(const T* src, const int32_t* rows, int64_t dim, int64_t t_rows, T* dst) {
  const int32_t r = rows[blockIdx.x];
  if (r < 0 || r >= t_rows) return;
  const T* s = src + blockIdx.x * dim;
  T* d = dst + r * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) d[i] = s[i];
}

}  // namespace

void launch_embed(DType table_t, const void* table, int64_t vocab, int64_t dim, const int32_t* ids, int64_t n,
                  DType out_t, void* out, float scale, ErrorSink err, cudaStream_t s) {
  if (n == 0) return;
  switch (table_t) {
    case DType::BF16: launch_from<bf16>(table, vocab, dim, ids, n, out_t, out, scale, err, s); break;
    case DType::F16: launch_from<__half>(table, vocab, dim, ids, n, out_t, out, scale, err, s); break;
    default: launch_from<float>(table, vocab, dim, ids, n, out_t, out, scale, err, s); break;
  }
}

void launch_scatter_rows(DType t, const void* src, const int32_t* rows, int64_t n, int64_t dim, void* dst,
                         int64_t t_rows, cudaStream_t s) {
  if (n == 0) return;
  if (t == DType::BF16)
    scatter_rows_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(static_cast<const bf16*>(src), rows, dim, t_rows,
                                                                 static_cast<bf16*>(dst));
  else
    scatter_rows_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(static_cast<const float*>(src), rows, dim, t_rows,
                                                                 static_cast<float*>(dst));
  CUDA_CHECK_LAUNCH();
}

}  // namespace kestrel::backends::cuda
