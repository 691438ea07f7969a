// Embedding lookup: one block per token copies its table row, converting to the output type.
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

}  // namespace kestrel::backends::cuda
