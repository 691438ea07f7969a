#include "backends/cuda/sampling.h"

#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_tensor.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"

namespace kestrel::backends::cuda {

float sampling_uniform(uint64_t seed) {
  // splitmix64: a full-avalanche mix, so neighbouring seeds give unrelated draws.
  uint64_t z = seed + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1.0p-24f;  // 24 bits: exactly representable, < 1
}

static_assert(sizeof(SampleRowParams) % 4 == 0, "SampleRowParams travels as an i32 tensor");

std::vector<int32_t> sample(const Tensor& logits, const std::vector<SamplingParams>& params, void* stream) {
  KS_CHECK(logits.device == Device::Cuda && logits.ndim() == 2, "sample expects device logits [B, V], got {}",
           logits.describe());
  KS_CHECK(logits.dtype == DType::F32 || logits.dtype == DType::BF16, "sample takes f32 or bf16 logits, got {}",
           logits.describe());
  const int64_t B = logits.dim(0), V = logits.dim(1);
  KS_CHECK(static_cast<int64_t>(params.size()) == B, "sample got {} parameter sets for {} rows", params.size(), B);
  KS_CHECK(V > 0 && V <= INT32_MAX, "sample: vocabulary of {} tokens is out of range", V);
  if (B == 0) return {};
  Tensor host_params = Tensor::empty_host(DType::I32, {B, static_cast<int64_t>(sizeof(SampleRowParams) / 4)});
  auto* rows = static_cast<SampleRowParams*>(host_params.data);
  for (int64_t b = 0; b < B; ++b) {
    const SamplingParams& p = params[b];
    KS_CHECK(std::isfinite(p.temperature) && std::isfinite(p.top_p) && std::isfinite(p.min_p) && p.min_p <= 1.f,
             "sample: bad parameters for row {} (temperature {}, top_p {}, min_p {})", b, p.temperature, p.top_p,
             p.min_p);
    rows[b] = SampleRowParams{p.temperature, p.top_k, p.top_p, p.min_p, sampling_uniform(p.seed)};
  }
  const Tensor dev_params = to_device(host_params, DType::I32, stream);
  Tensor ids = empty_device(DType::I32, {B});
  launch_sample(logits.dtype, logits.data, B, V, static_cast<const SampleRowParams*>(dev_params.data),
                ids.ptr<int32_t>(), static_cast<cudaStream_t>(stream));
  const Tensor host_ids = to_host(ids, DType::I32, stream);
  return std::vector<int32_t>(host_ids.ptr<int32_t>(), host_ids.ptr<int32_t>() + B);
}

std::vector<int32_t> argmax(const Tensor& logits, void* stream) {
  KS_CHECK(logits.ndim() == 2, "argmax expects logits [B, V], got {}", logits.describe());
  return sample(logits, std::vector<SamplingParams>(logits.dim(0), SamplingParams{.temperature = 0.f}), stream);
}

}  // namespace kestrel::backends::cuda
