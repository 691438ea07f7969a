// Scatter of new keys/values into the paged cache: one block per token, 16-byte vectors when the row
// allows (the common bf16 -> bf16 case is a plain copy). Code pages (fp8, int8, int4, int2) are encoded here, one
// thread per scale group, with the codec the CPU reference uses (core/kv_codec.h).
#include "backends/cuda/common.cuh"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "core/kv_codec.h"

namespace kestrel::backends::cuda {
namespace {

template <typename Tin, typename Tout>
__global__ void kv_write_kernel(const Tin* k, const Tin* v, const int32_t* slots, int64_t row, Tout* kc, Tout* vc,
                                int64_t n_slots, ErrorSink errors) {
  pdl_launch_dependents();  // decode attention (a programmatic dependent) may start its prologue now
  const int32_t slot = slots[blockIdx.x];
  if (slot < 0 || slot >= n_slots) {
    if (threadIdx.x == 0) raise_row_error(errors.words, errors.capacity, blockIdx.x, kErrKvSlot);
    return;
  }
  const Tin* ks = k + blockIdx.x * row;
  const Tin* vs = v + blockIdx.x * row;
  Tout* kd = kc + slot * row;
  Tout* vd = vc + slot * row;
  if constexpr (sizeof(Tin) == sizeof(Tout) && Vec16<Tin>::N == Vec16<Tout>::N) {
    if (row % Vec16<Tin>::N == 0) {
      constexpr int N = Vec16<Tin>::N;
      for (int64_t i = threadIdx.x; i < row / N; i += blockDim.x) {
        const Vec16<Tin> a = load16(ks + i * N), b = load16(vs + i * N);
        Vec16<Tout> ao, bo;
#pragma unroll
        for (int j = 0; j < N; ++j) {
          ao.v[j] = from_f32<Tout>(to_f32(a.v[j]));
          bo.v[j] = from_f32<Tout>(to_f32(b.v[j]));
        }
        store16(kd + i * N, ao);
        store16(vd + i * N, bo);
      }
      return;
    }
  }
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    kd[i] = from_f32<Tout>(to_f32(ks[i]));
    vd[i] = from_f32<Tout>(to_f32(vs[i]));
  }
}

template <typename Tin, typename Tout>
void launch_typed(const void* k, const void* v, const int32_t* slots, int64_t T, int64_t row, void* kc, void* vc,
                  int64_t n_slots, ErrorSink err, cudaStream_t s) {
  kv_write_kernel<<<static_cast<unsigned>(T), 128, 0, s>>>(static_cast<const Tin*>(k), static_cast<const Tin*>(v),
                                                           slots, row, static_cast<Tout*>(kc), static_cast<Tout*>(vc),
                                                           n_slots, err);
  CUDA_CHECK_LAUNCH();
}

// Work item i encodes group i % groups of token i / groups (row = groups * group), K items then V.
template <typename Tin, quant::KvCode C>
__global__ void kv_quantize_kernel(const Tin* k, const Tin* v, const int32_t* slots, int64_t T, int64_t row,
                                   const KvPages p, ErrorSink errors) {
  pdl_launch_dependents();
  constexpr int kP = quant::kv_params(C);
  const int64_t groups = row / p.group;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < 2 * T * groups;
       i += int64_t{gridDim.x} * blockDim.x) {
    const bool is_v = i >= T * groups;
    const int64_t t = (i % (T * groups)) / groups, g = i % groups;
    const int32_t slot = slots[t];
    if (slot < 0 || slot >= p.n_slots) {
      if (g == 0 && !is_v) raise_row_error(errors.words, errors.capacity, t, kErrKvSlot);
      continue;
    }
    const Tin* src = (is_v ? v : k) + t * row + g * p.group;
    float x[quant::kKvMaxGroup];
    for (int j = 0; j < p.group; ++j) x[j] = to_f32(src[j]);
    auto* codes = static_cast<uint8_t*>(is_v ? p.v : p.k) + quant::kv_row_bytes(C, slot * row + g * p.group);
    auto* params = static_cast<uint16_t*>(is_v ? p.v_params : p.k_params) + (slot * groups + g) * kP;
    quant::kv_encode_group<C>(x, p.group, codes, params);
  }
}

template <typename Tin, quant::KvCode C>
void launch_quantize(const void* k, const void* v, const int32_t* slots, int64_t T, int64_t row, const KvPages& p,
                     ErrorSink err, cudaStream_t s) {
  kv_quantize_kernel<Tin, C><<<grid_for(2 * T * (row / p.group), 128), 128, 0, s>>>(
      static_cast<const Tin*>(k), static_cast<const Tin*>(v), slots, T, row, p, err);
  CUDA_CHECK_LAUNCH();
}

template <typename Tin>
void launch_from(const void* k, const void* v, const int32_t* slots, int64_t T, int64_t row, const KvPages& p,
                 ErrorSink err, cudaStream_t s) {
  switch (p.cache_t) {
    case DType::BF16: launch_typed<Tin, bf16>(k, v, slots, T, row, p.k, p.v, p.n_slots, err, s); break;
    case DType::F16: launch_typed<Tin, __half>(k, v, slots, T, row, p.k, p.v, p.n_slots, err, s); break;
    case DType::F8E4M3: launch_quantize<Tin, quant::KvCode::Fp8>(k, v, slots, T, row, p, err, s); break;
    case DType::U8: launch_quantize<Tin, quant::KvCode::U8>(k, v, slots, T, row, p, err, s); break;
    case DType::U4: launch_quantize<Tin, quant::KvCode::U4>(k, v, slots, T, row, p, err, s); break;
    case DType::U2: launch_quantize<Tin, quant::KvCode::U2>(k, v, slots, T, row, p, err, s); break;
    default: launch_typed<Tin, float>(k, v, slots, T, row, p.k, p.v, p.n_slots, err, s); break;
  }
}

}  // namespace

void launch_kv_write(DType src_t, const void* k, const void* v, const int32_t* slots, int64_t T, int64_t row,
                     const KvPages& pages, ErrorSink err, cudaStream_t s) {
  if (T == 0) return;
  if (src_t == DType::BF16)
    launch_from<bf16>(k, v, slots, T, row, pages, err, s);
  else
    launch_from<float>(k, v, slots, T, row, pages, err, s);
}

}  // namespace kestrel::backends::cuda
