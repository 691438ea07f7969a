// The fast CPU ops: threaded drivers over a kernel table (kernels.h). Ops whose inner loops are
// ISA-specific (matmul, attention, silu_mul) take the table; the rest are plain threaded loops that
// the compiler vectorises well enough for their size. Each op has a `*_supports` check for the
// dispatcher that says no (with a reason) to dtypes and layouts it does not handle.
#pragma once

#include <cstdint>
#include <string>

#include "backends/cpu/kernels.h"
#include "ops/dispatch.h"

namespace kestrel::backends::cpu {

bool matmul_supports(const Kernels& k, ActFormat f, const ops::MatmulArgs& a, std::string* why);
void matmul(const Kernels& k, ActFormat f, const ops::MatmulArgs& a, const ops::Context& ctx);

bool attention_supports(const Kernels& k, const ops::AttentionArgs& a, std::string* why);
void attention(const Kernels& k, const ops::AttentionArgs& a, const ops::Context& ctx);

bool act_mul_supports(const ops::BinaryArgs& a, std::string* why);  // silu_mul, gelu_mul
void silu_mul(const Kernels& k, const ops::BinaryArgs& a, const ops::Context& ctx);
// Threaded scalar loop (tanh per element): the GeGLU activation is a sliver of the MLP's matmul time.
void gelu_mul(const ops::BinaryArgs& a, const ops::Context& ctx);

bool add_supports(const ops::BinaryArgs& a, std::string* why);
void add(const ops::BinaryArgs& a, const ops::Context& ctx);

bool rmsnorm_supports(const ops::RmsnormArgs& a, std::string* why);
void rmsnorm(const ops::RmsnormArgs& a, const ops::Context& ctx);

bool rope_supports(const ops::RopeArgs& a, std::string* why);
void rope(const ops::RopeArgs& a, const ops::Context& ctx);

bool embed_supports(const ops::EmbedArgs& a, std::string* why);
void embed(const ops::EmbedArgs& a, const ops::Context& ctx);

bool scatter_rows_supports(const ops::ScatterRowsArgs& a, std::string* why);
void scatter_rows(const ops::ScatterRowsArgs& a, const ops::Context& ctx);

bool kv_write_supports(const ops::KvWriteArgs& a, std::string* why);
void kv_write(const ops::KvWriteArgs& a, const ops::Context& ctx);

// The encoder's ops: layernorm and gelu in elementwise.cpp, attention (one task per sequence and head)
// in encoder_attention.cpp.
bool layernorm_supports(const ops::LayernormArgs& a, std::string* why);
void layernorm(const ops::LayernormArgs& a, const ops::Context& ctx);
bool gelu_supports(const ops::UnaryArgs& a, std::string* why);
void gelu(const ops::UnaryArgs& a, const ops::Context& ctx);
bool encoder_attention_supports(const ops::EncoderAttentionArgs& a, std::string* why);
void encoder_attention(const ops::EncoderAttentionArgs& a, const ops::Context& ctx);

// Shared by the drivers: true when every tensor is f32, else sets *why.
bool all_f32(std::initializer_list<const Tensor*> ts, std::string* why);

// The sum of term(i) over [0, n): eight f32 partial sums vectorise without -ffast-math and keep the
// rounding error small; they and the tail are added in double.
template <typename Term>
double partial_sums(int64_t n, Term&& term) {
  float part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) part[l] += term(i + l);
  double sum = 0;
  for (float p : part) sum += p;
  for (; i < n; ++i) sum += term(i);
  return sum;
}

}  // namespace kestrel::backends::cpu
