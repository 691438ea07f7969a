// The dispatcher: a registry of variants per op. A variant states its device, a priority and a
// capability check; the dispatcher runs the highest-priority variant that supports the call, or the
// forced one when it supports the call (otherwise it logs the fallback once and picks normally).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ops/context.h"
#include "ops/ops.h"

namespace kestrel::ops {

template <typename Args>
struct Variant {
  std::string name;  // "cpu.ref", "cpu.avx2", "cuda.flat_gemm" ...
  Device device;
  int priority;  // higher wins
  // Returns true when this variant can run the call; may set *why when it can't.
  std::function<bool(const Args&, std::string* why)> supports;
  std::function<void(const Args&, const Context&)> run;
  // Optional, for ops planned once per step (attention): what the variant prepares for every call of the
  // step (split counts, workspace); handed back to run() through the op's arguments. run() must also work
  // without it (it then plans for itself).
  std::function<std::shared_ptr<void>(const Args&, const Context&)> plan = nullptr;
  // True when a row's result may depend on the other rows of the call (a reduction chosen by the batch's
  // shape, e.g. cuBLASLt's split-K). Context::batch_invariant passes such variants over.
  bool batch_dependent = false;
};

template <typename Args>
class Registry {
 public:
  explicit Registry(std::string op) : op_(std::move(op)) {}
  void add(Variant<Args> v) { variants_.push_back(std::move(v)); }
  const std::vector<Variant<Args>>& variants() const { return variants_; }
  const std::string& op() const { return op_; }

  // Chooses the variant for this call (throws when none supports it).
  const Variant<Args>& select(const Args& args, const Context& ctx) const;
  void run(const Args& args, const Context& ctx) const { select(args, ctx).run(args, ctx); }
  // Runs a named variant directly (ops harness); throws if missing or unsupported.
  void run_variant(const std::string& name, const Args& args, const Context& ctx) const;

 private:
  std::string op_;
  std::vector<Variant<Args>> variants_;
};

inline constexpr const char* kNothingInstalled =
    "no variants are registered; create contexts with backends::make_context() (it installs the backends)";
void log_fallback(const std::string& op, const std::string& forced, const std::string& why, const std::string& used);
[[noreturn]] void fail_no_variant(const std::string& op, Device device, const std::string& why);

template <typename Args>
const Variant<Args>& Registry<Args>::select(const Args& args, const Context& ctx) const {
  std::string why;
  if (auto it = ctx.forced.find(op_); it != ctx.forced.end()) {
    for (const auto& v : variants_) {
      if (v.name != it->second || v.device != ctx.device) continue;
      std::string reason;
      if (ctx.batch_invariant && v.batch_dependent)
        reason = "its reduction depends on the batch's shape (batch-invariant mode)";
      else if (v.supports(args, &reason))
        return v;
      why = reason;
    }
  }
  const Variant<Args>* best = nullptr;
  std::string last_reason;
  for (const auto& v : variants_) {
    if (v.device != ctx.device || (best && v.priority <= best->priority)) continue;
    std::string reason;
    if (ctx.batch_invariant && v.batch_dependent)
      last_reason = v.name + ": its reduction depends on the batch's shape (batch-invariant mode)";
    else if (v.supports(args, &reason))
      best = &v;
    else
      last_reason = v.name + ": " + reason;
  }
  if (!best) fail_no_variant(op_, ctx.device, variants_.empty() ? kNothingInstalled : last_reason);
  if (auto it = ctx.forced.find(op_); it != ctx.forced.end() && it->second != best->name)
    log_fallback(op_, it->second, why.empty() ? "no such variant on this device" : why, best->name);
  return *best;
}

template <typename Args>
void Registry<Args>::run_variant(const std::string& name, const Args& args, const Context& ctx) const {
  for (const auto& v : variants_) {
    if (v.name != name) continue;
    std::string why;
    if (!v.supports(args, &why)) fail_no_variant(op_ + " variant " + name, v.device, why);
    v.run(args, ctx);
    return;
  }
  fail_no_variant(op_ + " variant " + name, ctx.device, "not registered");
}

// Argument packs, one per op (see ops.h for the contracts).
struct EmbedArgs {
  const Tensor& table;
  const Tensor& ids;
  Tensor& out;
  float scale = 1.f;
};
struct ScatterRowsArgs {
  const Tensor& src;
  const Tensor& rows;
  Tensor& dst;
};
struct MatmulArgs {
  const Tensor& x;
  const Linear& w;
  Tensor& y;
  const Tensor* bias;
};
struct RmsnormArgs {
  const Tensor& x;
  const Tensor& w;
  float eps;
  Tensor& y;
};
struct AddRmsnormArgs {
  Tensor& x;
  const Tensor& r;
  const Tensor& w;
  float eps;
  Tensor& y;
};
struct SwigluArgs {
  const Tensor& gate_up;
  Tensor& y;
};
struct RopeKvWriteArgs {
  const Tensor& qkv;
  const Tensor& positions;
  const Tensor& slots;
  const RopeParams& p;
  const QkNorm& norm;
  Tensor& q_out;
  KvLayer& cache;
};
struct BinaryArgs {  // add, silu_mul, gelu_mul
  const Tensor& a;
  const Tensor& b;
  Tensor& y;
};
struct RopeArgs {
  Tensor& x;
  const Tensor& positions;
  const RopeParams& p;
};
struct KvWriteArgs {
  const Tensor& k;
  const Tensor& v;
  const Tensor& slots;
  KvLayer& cache;
};
struct AttentionArgs {
  const Tensor& q;
  const KvLayer& cache;
  const AttentionBatch& batch;
  Tensor& out;
  const void* state = nullptr;  // the variant's plan for this step (Variant::plan), or null
};

struct LayernormArgs {
  const Tensor& x;
  const Tensor& w;
  const Tensor& b;
  float eps;
  Tensor& y;
};
struct UnaryArgs {  // gelu
  const Tensor& x;
  Tensor& y;
};
struct EncoderAttentionArgs {
  const Tensor& qkv;
  const EncoderAttentionBatch& batch;
  Tensor& out;
};

struct SampleArgs {
  Tensor& logits;
  const Tensor& rows;
  Tensor& penalties;
  Tensor& out;
  const Tensor& masks;
};

struct FeedSampledArgs {
  Tensor& tokens;
  const Tensor& from;
  const Tensor& prev;
};

struct Registries {
  Registry<EmbedArgs> embed{"embed"};
  Registry<ScatterRowsArgs> scatter_rows{"scatter_rows"};
  Registry<MatmulArgs> matmul{"matmul"};
  Registry<RmsnormArgs> rmsnorm{"rmsnorm"};
  Registry<BinaryArgs> add{"add"};
  Registry<AddRmsnormArgs> add_rmsnorm{"add_rmsnorm"};
  Registry<BinaryArgs> silu_mul{"silu_mul"};
  Registry<SwigluArgs> swiglu{"swiglu"};
  Registry<BinaryArgs> gelu_mul{"gelu_mul"};
  Registry<SwigluArgs> geglu{"geglu"};
  Registry<RopeArgs> rope{"rope"};
  Registry<KvWriteArgs> kv_write{"kv_write"};
  Registry<RopeKvWriteArgs> rope_kv_write{"rope_kv_write"};
  Registry<AttentionArgs> attention{"attention"};
  Registry<LayernormArgs> layernorm{"layernorm"};
  Registry<UnaryArgs> gelu{"gelu"};
  Registry<EncoderAttentionArgs> encoder_attention{"encoder_attention"};
  Registry<SampleArgs> sample{"sample"};
  Registry<FeedSampledArgs> feed_sampled{"feed_sampled"};
};

// All op registries. They start empty: backends::install() (backends/backends.h, called by whatever
// creates a context) registers every built-in backend's variants.
Registries& registries();

}  // namespace kestrel::ops
