// Rotary position embedding in place. One thread per rotated pair; the inverse frequencies (with any
// llama3/linear scaling already applied on the host by RopeParams::inv_freq) travel in the kernel's
// parameters, so the launch needs no upload and can be captured in a CUDA graph.
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace kestrel::backends::cuda {
namespace {

struct RopeFreqs {
  float inv_freq[kMaxRopePairs];
};

template <typename T>
__global__ void rope_kernel(T* x, const int32_t* positions, int64_t T_, int64_t H, int64_t D, bool adjacent, int half,
                            const __grid_constant__ RopeFreqs f) {
  const int64_t total = T_ * H * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int i = static_cast<int>(idx % half);
    const int64_t th = idx / half;  // token * H + head
    const int64_t t = th / H;
    T* row = x + th * D;
    float s, c;
    sincosf(static_cast<float>(positions[t]) * f.inv_freq[i], &s, &c);
    const int i0 = adjacent ? 2 * i : i;
    const int i1 = adjacent ? 2 * i + 1 : i + half;
    const float x0 = to_f32(row[i0]), x1 = to_f32(row[i1]);
    row[i0] = from_f32<T>(x0 * c - x1 * s);
    row[i1] = from_f32<T>(x0 * s + x1 * c);
  }
}

}  // namespace

void launch_rope(DType t, void* x, const int32_t* positions, int64_t T, int64_t H, int64_t D, bool adjacent,
                 int rot_dim, const float* inv_freq, cudaStream_t s) {
  const int half = rot_dim / 2;
  if (T == 0 || H == 0 || half == 0) return;
  RopeFreqs f{};
  for (int i = 0; i < half; ++i) f.inv_freq[i] = inv_freq[i];
  const unsigned grid = grid_for(T * H * half, 256);
  if (t == DType::BF16)
    rope_kernel<<<grid, 256, 0, s>>>(static_cast<bf16*>(x), positions, T, H, D, adjacent, half, f);
  else
    rope_kernel<<<grid, 256, 0, s>>>(static_cast<float*>(x), positions, T, H, D, adjacent, half, f);
  CUDA_CHECK_LAUNCH();
}

}  // namespace kestrel::backends::cuda
