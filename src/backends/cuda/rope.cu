// Rotary position embedding: in place (one thread per rotated pair), and fused with the per-head q/k
// norm and the cache write after a fused q/k/v projection (one block per token and head). The inverse
// frequencies (with any llama3/linear scaling already applied on the host by RopeParams::inv_freq) travel
// in the kernel's parameters, so the launch needs no upload and can be captured in a CUDA graph. Code pages
// (fp8, int8, int4) are encoded from the f32 head in shared memory (core/kv_codec.h), one thread per group.
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.cuh"
#include "core/kv_codec.h"

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

constexpr int kFusedThreads = 128;

// The page type parameter of the fused kernel for code pages.
template <quant::KvCode K>
struct Coded {
  static constexpr quant::KvCode code = K;
};
template <typename C>
inline constexpr bool kCoded = !std::is_same_v<C, float> && !std::is_same_v<C, bf16> && !std::is_same_v<C, __half>;

// Block b handles head b % heads of token b / heads, heads = H + 2 Hkv in q | k | v order. The head is
// staged in shared memory as f32 so the norm and the rotation round once, on the final store.
template <typename T, typename C>
__global__ void __launch_bounds__(kFusedThreads)
    rope_kv_write_kernel(const RopeKvWriteLaunch l, const T* qkv, T* q_out, const __grid_constant__ RopeFreqs f) {
  __shared__ float row[kMaxFusedHeadDim];
  pdl_wait();               // a programmatic dependent (launch.cuh): qkv is the projection's output
  pdl_launch_dependents();  // decode attention may start its prologue now
  const int heads = l.H + 2 * l.Hkv, D = l.D;
  const int64_t t = blockIdx.x / heads;
  const int h = static_cast<int>(blockIdx.x % heads);
  const bool is_q = h < l.H, is_k = !is_q && h < l.H + l.Hkv;
  int32_t slot = 0;
  if (!is_q) {
    slot = l.slots[t];
    if (slot < 0 || slot >= l.pages.n_slots) {
      if (threadIdx.x == 0) raise_row_error(l.errors.words, l.errors.capacity, t, kErrKvSlot);
      return;
    }
  }
  const T* src = qkv + (t * heads + h) * D;
  float ss = 0.f;
  for (int i = threadIdx.x; i < D; i += kFusedThreads) {
    row[i] = to_f32(src[i]);
    ss += row[i] * row[i];
  }
  const float* norm = is_q ? l.q_norm : is_k ? l.k_norm : nullptr;
  if (norm) {  // uniform per block
    const float inv = rsqrtf(block_sum<kFusedThreads>(ss) / static_cast<float>(D) + l.eps);
    for (int i = threadIdx.x; i < D; i += kFusedThreads) row[i] *= inv * norm[i];
  }
  __syncthreads();
  if (is_q || is_k) {
    const int half = l.rot_dim / 2;
    const float pos = static_cast<float>(l.positions[t]);
    for (int i = threadIdx.x; i < half; i += kFusedThreads) {
      float sn, cs;
      sincosf(pos * f.inv_freq[i], &sn, &cs);
      const int i0 = l.adjacent ? 2 * i : i;
      const int i1 = l.adjacent ? 2 * i + 1 : i + half;
      const float x0 = row[i0], x1 = row[i1];
      row[i0] = x0 * cs - x1 * sn;
      row[i1] = x0 * sn + x1 * cs;
    }
    __syncthreads();
  }
  if (is_q) {
    T* dst = q_out + (t * l.H + h) * D;
    for (int i = threadIdx.x; i < D; i += kFusedThreads) dst[i] = from_f32<T>(row[i]);
  } else {
    const int64_t e0 =
        (static_cast<int64_t>(slot) * l.Hkv + (h - l.H - (is_k ? 0 : l.Hkv))) * D;  // row's first element
    if constexpr (kCoded<C>) {
      constexpr quant::KvCode K = C::code;
      const int group = l.pages.group;
      auto* codes = static_cast<uint8_t*>(is_k ? l.pages.k : l.pages.v) + quant::kv_row_bytes(K, e0);
      auto* params =
          static_cast<uint16_t*>(is_k ? l.pages.k_params : l.pages.v_params) + e0 / group * quant::kv_params(K);
      for (int g = threadIdx.x; g < D / group; g += kFusedThreads)
        quant::kv_encode_group<K>(row + g * group, group, codes + quant::kv_row_bytes(K, g * group),
                                  params + g * quant::kv_params(K));
    } else {
      C* dst = static_cast<C*>(is_k ? l.pages.k : l.pages.v) + e0;
      for (int i = threadIdx.x; i < D; i += kFusedThreads) dst[i] = from_f32<C>(row[i]);
    }
  }
}

template <typename T, typename C>
void launch_fused(const RopeKvWriteLaunch& l, const RopeFreqs& f, cudaStream_t s) {
  const int64_t blocks = l.T * (l.H + 2 * l.Hkv);
  launch_dependent(rope_kv_write_kernel<T, C>, dim3(static_cast<unsigned>(blocks)), dim3(kFusedThreads), 0, s, l,
                   static_cast<const T*>(l.qkv), static_cast<T*>(l.q_out), f);
}

template <typename T>
void launch_fused_from(const RopeKvWriteLaunch& l, const RopeFreqs& f, cudaStream_t s) {
  switch (l.pages.cache_t) {
    case DType::BF16: launch_fused<T, bf16>(l, f, s); break;
    case DType::F16: launch_fused<T, __half>(l, f, s); break;
    case DType::F8E4M3: launch_fused<T, Coded<quant::KvCode::Fp8>>(l, f, s); break;
    case DType::U8: launch_fused<T, Coded<quant::KvCode::U8>>(l, f, s); break;
    case DType::U4: launch_fused<T, Coded<quant::KvCode::U4>>(l, f, s); break;
    case DType::U2: launch_fused<T, Coded<quant::KvCode::U2>>(l, f, s); break;
    default: launch_fused<T, float>(l, f, s); break;
  }
}

}  // namespace

void launch_rope_kv_write(const RopeKvWriteLaunch& l, cudaStream_t s) {
  if (l.T == 0) return;
  RopeFreqs f{};
  for (int i = 0; i < l.rot_dim / 2; ++i) f.inv_freq[i] = l.inv_freq[i];
  if (l.act_t == DType::BF16)
    launch_fused_from<bf16>(l, f, s);
  else
    launch_fused_from<float>(l, f, s);
}

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
