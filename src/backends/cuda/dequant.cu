// A GGUF-typed weight matrix to bf16, the bits the flat GEMM decodes on the fly (weight_rows.cuh): what the
// large-M quantized matmuls multiply with cuBLASLt or the fixed-reduction GEMM.
#include <stdexcept>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/weight_rows.cuh"

namespace kestrel::backends::cuda {
namespace {

// One thread per group of 8 weights: a 16-byte store; a warp writes 512 contiguous bytes.
template <class Block>
__global__ void dequant_bf16_kernel(const void* __restrict__ w, bf16* __restrict__ out, int64_t groups, int K) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= groups) return;
  const int per_row = K / quant::kGroup;
  const int n = static_cast<int>(i / per_row), g = static_cast<int>(i % per_row);
  const Block* row = QuantRows<Block>::row(w, n, K);
  float f[quant::kGroup];
  quant::decode_group(row, g, f);
  *reinterpret_cast<uint4*>(out + static_cast<size_t>(n) * K + quant::kGroup * g) = pack_bf16x8(f);
}

}  // namespace

void launch_dequant_bf16(DType w_t, const void* w, void* out, int N, int K, cudaStream_t s) {
  const int64_t groups = static_cast<int64_t>(N) * (K / quant::kGroup);
  if (groups == 0) return;
  const unsigned blocks = static_cast<unsigned>((groups + 255) / 256);
  const bool known = quant::visit_weight_block(w_t, [&]<class Block>(const Block*) {
    dequant_bf16_kernel<Block><<<blocks, 256, 0, s>>>(w, static_cast<bf16*>(out), groups, K);
  });
  if (!known) throw std::invalid_argument("launch_dequant_bf16: not a GGUF weight type");
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace kestrel::backends::cuda
