// The fast CPU ops: threaded drivers over a kernel table (kernels.h). Ops whose inner loops are
// ISA-specific (matmul, attention, silu_mul) take the table; the rest are plain threaded loops that
// the compiler vectorises well enough for their size. Each op has a `*_supports` check for the
// dispatcher that says no (with a reason) to dtypes and layouts it does not handle.
#pragma once

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

// Shared by the drivers: true when every tensor is f32, else sets *why.
bool all_f32(std::initializer_list<const Tensor*> ts, std::string* why);

}  // namespace kestrel::backends::cpu
