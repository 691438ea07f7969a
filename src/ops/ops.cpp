#include "ops/ops.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "ops/dispatch.h"

namespace kestrel::ops {

namespace {
// True when a profiling run skips this op (Context::profile_only).
bool skipped(const Context& ctx, const char* op) {
  return !ctx.profile_only.empty() && ctx.profile_only != op;
}

// CPU contexts may come without a lane: their memory is plain host memory.
bool host_only(const Context& ctx) {
  return ctx.device == Device::Cpu && !ctx.runtime;
}
}  // namespace

Tensor allocate(const Context& ctx, DType dtype, std::vector<int64_t> shape) {
  if (host_only(ctx)) return Tensor::empty_host(dtype, std::move(shape));
  return ctx.lane().allocate(dtype, std::move(shape));
}

Tensor upload(const Context& ctx, const Tensor& host) {
  KS_CHECK(host.device == Device::Cpu, "upload expects a host tensor, got one on the device");
  if (host_only(ctx)) return host;
  return ctx.lane().upload(host);
}

void download(const Context& ctx, const Tensor& src, Tensor& host_dst) {
  KS_CHECK(host_dst.device == Device::Cpu && host_dst.nbytes() == src.nbytes() && host_dst.dtype == src.dtype,
           "download into {} from {} does not match", host_dst.describe(), src.describe());
  if (host_only(ctx)) {
    KS_CHECK(src.device == Device::Cpu, "download from a device tensor needs the context's lane");
    if (src.data != host_dst.data) std::memcpy(host_dst.data, src.data, src.nbytes());
    return;
  }
  ctx.lane().download(src, host_dst);
}

void embed(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out, float scale) {
  if (skipped(ctx, "embed")) return;
  registries().embed.run({table, ids, out, scale}, ctx);
}

void scatter_rows(const Context& ctx, const Tensor& src, const Tensor& rows, Tensor& dst) {
  KS_CHECK(rows.dtype == DType::I32 && src.rows() == rows.numel() && src.cols() == dst.cols() &&
               src.dtype == dst.dtype && src.rows() <= dst.rows(),
           "scatter_rows shape mismatch: src {} rows {} dst {}", src.describe(), rows.describe(), dst.describe());
  if (skipped(ctx, "scatter_rows")) return;
  registries().scatter_rows.run({src, rows, dst}, ctx);
}

void matmul(const Context& ctx, const Tensor& x, const Linear& w, Tensor& y, const Tensor* bias) {
  KS_CHECK(x.cols() == w.in_features() && y.cols() == w.out_features() && y.rows() == x.rows(),
           "matmul shape mismatch: x {} w {} y {}", x.describe(), w.describe(), y.describe());
  if (skipped(ctx, "matmul")) return;
  if (ctx.observer) ctx.observer->observe(w.id, x);
  registries().matmul.run({x, w, y, bias}, ctx);
}

void rmsnorm(const Context& ctx, const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  KS_CHECK(w.numel() == x.cols() && y.numel() == x.numel(), "rmsnorm shape mismatch: x {} w {} y {}", x.describe(),
           w.describe(), y.describe());
  if (skipped(ctx, "rmsnorm")) return;
  registries().rmsnorm.run({x, w, eps, y}, ctx);
}

void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& y) {
  KS_CHECK(a.numel() == b.numel() && a.numel() == y.numel(), "add shape mismatch");
  if (skipped(ctx, "add")) return;
  registries().add.run({a, b, y}, ctx);
}

void add_rmsnorm(const Context& ctx, Tensor& x, const Tensor& r, const Tensor& w, float eps, Tensor& y) {
  KS_CHECK(r.numel() == x.numel() && y.numel() == x.numel() && w.numel() == x.cols() && x.data != y.data,
           "add_rmsnorm shape mismatch: x {} r {} w {} y {}", x.describe(), r.describe(), w.describe(), y.describe());
  if (skipped(ctx, "add_rmsnorm")) return;
  registries().add_rmsnorm.run({x, r, w, eps, y}, ctx);
}

namespace {
// The gated MLP activations, SwiGLU and GeGLU alike: over a fused gate/up output, or gate and up apart.
void run_gated(const Context& ctx, const Registry<SwigluArgs>& reg, const Tensor& gate_up, Tensor& y) {
  KS_CHECK(gate_up.cols() == 2 * y.cols() && gate_up.rows() == y.rows() && gate_up.data != y.data,
           "{} shape mismatch: gate_up {} y {}", reg.op(), gate_up.describe(), y.describe());
  if (skipped(ctx, reg.op().c_str())) return;
  reg.run({gate_up, y}, ctx);
}

void run_act_mul(const Context& ctx, const Registry<BinaryArgs>& reg, const Tensor& gate, const Tensor& up, Tensor& y) {
  KS_CHECK(gate.numel() == up.numel() && gate.numel() == y.numel(), "{} shape mismatch", reg.op());
  if (skipped(ctx, reg.op().c_str())) return;
  reg.run({gate, up, y}, ctx);
}
}  // namespace

void swiglu(const Context& ctx, const Tensor& gate_up, Tensor& y) {
  run_gated(ctx, registries().swiglu, gate_up, y);
}

void silu_mul(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& y) {
  run_act_mul(ctx, registries().silu_mul, gate, up, y);
}

void geglu(const Context& ctx, const Tensor& gate_up, Tensor& y) {
  run_gated(ctx, registries().geglu, gate_up, y);
}

void gelu_mul(const Context& ctx, const Tensor& gate, const Tensor& up, Tensor& y) {
  run_act_mul(ctx, registries().gelu_mul, gate, up, y);
}

void rope(const Context& ctx, Tensor& x, const Tensor& positions, const RopeParams& p) {
  KS_CHECK(x.ndim() == 3 && positions.numel() == x.dim(0) && p.rot_dim % 2 == 0 && p.rot_dim <= x.dim(2),
           "rope shape mismatch: x {} positions {} rot_dim {}", x.describe(), positions.describe(), p.rot_dim);
  if (skipped(ctx, "rope")) return;
  registries().rope.run({x, positions, p}, ctx);
}

void kv_write(const Context& ctx, const Tensor& k, const Tensor& v, const Tensor& slots, KvLayer& cache) {
  KS_CHECK(k.ndim() == 3 && k.dim(1) == cache.k.dim(2) && k.dim(2) == cache.k.dim(3) && slots.numel() == k.dim(0),
           "kv_write shape mismatch: k {} cache {}", k.describe(), cache.k.describe());
  if (skipped(ctx, "kv_write")) return;
  registries().kv_write.run({k, v, slots, cache}, ctx);
}

void rope_kv_write(const Context& ctx, const Tensor& qkv, const Tensor& positions, const Tensor& slots,
                   const RopeParams& p, const QkNorm& norm, Tensor& q_out, KvLayer& cache) {
  const bool shapes_ok = q_out.ndim() == 3 && cache.k.ndim() == 4 && q_out.dim(2) == cache.k.dim(3) &&
                         qkv.ndim() == 2 && qkv.rows() == q_out.dim(0) &&
                         qkv.cols() == (q_out.dim(1) + 2 * cache.k.dim(2)) * q_out.dim(2) &&
                         positions.numel() == qkv.rows() && slots.numel() == qkv.rows();
  KS_CHECK(shapes_ok && p.rot_dim % 2 == 0 && p.rot_dim <= q_out.dim(2),
           "rope_kv_write shape mismatch: qkv {} q_out {} cache {} rot_dim {}", qkv.describe(), q_out.describe(),
           cache.k.describe(), p.rot_dim);
  KS_CHECK((!norm.q || norm.q->numel() == q_out.dim(2)) && (!norm.k || norm.k->numel() == q_out.dim(2)),
           "rope_kv_write: q/k norm weights must have head_dim ({}) values", q_out.dim(2));
  if (skipped(ctx, "rope_kv_write")) return;
  registries().rope_kv_write.run({qkv, positions, slots, p, norm, q_out, cache}, ctx);
}

namespace {
void check_attention_shapes(const Tensor& q, const KvLayer& cache, const Tensor& out) {
  KS_CHECK(q.ndim() == 3 && q.dim(1) % cache.k.dim(2) == 0 && q.dim(2) == cache.k.dim(3) && out.numel() == q.numel(),
           "attention shape mismatch: q {} cache {}", q.describe(), cache.k.describe());
}

// Sequences [begin, end) of a batch, with the matching rows of its device tables.
AttentionBatch sub_batch(const AttentionBatch& b, size_t begin, size_t end) {
  if (begin == 0 && end == b.seqs.size()) return b;
  AttentionBatch p;
  p.scale = b.scale;
  p.window = b.window;
  p.seqs.assign(b.seqs.begin() + static_cast<ptrdiff_t>(begin), b.seqs.begin() + static_cast<ptrdiff_t>(end));
  const auto n = static_cast<int64_t>(end - begin);
  if (!b.block_tables.empty()) p.block_tables = b.block_tables.slice_rows(static_cast<int64_t>(begin), n);
  if (!b.seq_info.empty()) p.seq_info = b.seq_info.slice_rows(static_cast<int64_t>(begin), n);
  return p;
}
}  // namespace

void attention(const Context& ctx, const Tensor& q, const KvLayer& cache, const AttentionBatch& batch, Tensor& out) {
  check_attention_shapes(q, cache, out);
  if (skipped(ctx, "attention")) return;
  registries().attention.run({q, cache, batch, out}, ctx);
}

AttentionPlan plan_attention(const Context& ctx, const Tensor& q, const KvLayer& cache, const AttentionBatch& batch) {
  check_attention_shapes(q, cache, q);
  size_t decode = 0;
  if (batch.n_decode >= 0) {
    KS_CHECK(static_cast<size_t>(batch.n_decode) <= batch.seqs.size(), "plan_attention: {} decode rows of {} sequences",
             batch.n_decode, batch.seqs.size());
    decode = static_cast<size_t>(batch.n_decode);
    for (size_t i = 0; i < decode; ++i)
      KS_CHECK(batch.seqs[i].q_len == 1, "plan_attention: a decode row with q_len != 1");
  } else {
    while (decode < batch.seqs.size() && batch.seqs[decode].q_len == 1) ++decode;
  }
  AttentionPlan plan;
  for (const bool decode_part : {true, false}) {
    const size_t begin = decode_part ? 0 : decode, end = decode_part ? decode : batch.seqs.size();
    if (begin == end) continue;
    AttentionPlan::Part part;
    part.batch = sub_batch(batch, begin, end);
    part.batch.n_decode = decode_part ? static_cast<int>(end) : 0;  // a part is all decode rows or none
    Tensor out = q;                                                 // stands in for the output in the capability checks
    const AttentionArgs args{q, cache, part.batch, out};
    const auto& v = registries().attention.select(args, ctx);
    part.variant = &v;
    part.variant_name = v.name;
    if (v.plan) part.state = v.plan(args, ctx);
    plan.parts.push_back(std::move(part));
  }
  return plan;
}

void attention(const Context& ctx, const Tensor& q, const KvLayer& cache, const AttentionPlan& plan, Tensor& out) {
  check_attention_shapes(q, cache, out);
  if (skipped(ctx, "attention")) return;
  for (const AttentionPlan::Part& p : plan.parts) {
    const auto& v = *static_cast<const Variant<AttentionArgs>*>(p.variant);
    v.run({q, cache, p.batch, out, p.state.get()}, ctx);
  }
}

void layernorm(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& y) {
  KS_CHECK(w.numel() == x.cols() && b.numel() == x.cols() && y.numel() == x.numel(),
           "layernorm shape mismatch: x {} w {} b {} y {}", x.describe(), w.describe(), b.describe(), y.describe());
  if (skipped(ctx, "layernorm")) return;
  registries().layernorm.run({x, w, b, eps, y}, ctx);
}

void gelu(const Context& ctx, const Tensor& x, Tensor& y) {
  KS_CHECK(x.numel() == y.numel(), "gelu shape mismatch: x {} y {}", x.describe(), y.describe());
  if (skipped(ctx, "gelu")) return;
  registries().gelu.run({x, y}, ctx);
}

void encoder_attention(const Context& ctx, const Tensor& qkv, const EncoderAttentionBatch& batch, Tensor& out) {
  const int64_t T = qkv.ndim() == 2 ? qkv.rows() : -1;
  KS_CHECK(T >= 0 && out.ndim() == 3 && out.dim(0) == T && qkv.cols() == 3 * out.dim(1) * out.dim(2) &&
               qkv.data != out.data &&
               (batch.key_mask.empty() || (batch.key_mask.numel() == T && batch.key_mask.dtype == DType::I32)),
           "encoder_attention shape mismatch: qkv {} out {} key_mask {}", qkv.describe(), out.describe(),
           batch.key_mask.describe());
  for (const EncoderSeq& s : batch.seqs)
    KS_CHECK(s.begin >= 0 && s.len >= 0 && s.begin + int64_t{s.len} <= T,
             "encoder_attention: sequence rows [{}, {}) outside the {} rows of qkv", s.begin, s.begin + int64_t{s.len},
             T);
  if (skipped(ctx, "encoder_attention")) return;
  registries().encoder_attention.run({qkv, batch, out}, ctx);
}

void sample(const Context& ctx, Tensor& logits, const Tensor& rows, Tensor& penalties, Tensor& out,
            const Tensor& masks) {
  static_assert(sizeof(SampleRow) % 4 == 0 && sizeof(SampleOut) % 4 == 0 && sizeof(PenaltyEntry) == 20);
  const int64_t R = logits.ndim() == 2 ? logits.dim(0) : -1;
  KS_CHECK(R >= 0 && logits.dtype == DType::F32 && rows.dtype == DType::I32 && out.dtype == DType::I32 &&
               rows.numel() == R * int64_t{sizeof(SampleRow) / 4} &&
               out.numel() == R * int64_t{sizeof(SampleOut) / 4} &&
               (penalties.empty() ||
                (penalties.dtype == DType::I32 && penalties.cols() == int64_t{sizeof(PenaltyEntry) / 4})) &&
               (masks.empty() ||
                (masks.dtype == DType::I32 && masks.ndim() == 2 && masks.cols() == (logits.dim(1) + 31) / 32)),
           "sample shape mismatch: logits {} rows {} penalties {} out {} masks {}", logits.describe(), rows.describe(),
           penalties.describe(), out.describe(), masks.describe());
  if (skipped(ctx, "sample")) return;
  registries().sample.run({logits, rows, penalties, out, masks}, ctx);
}

void feed_sampled(const Context& ctx, Tensor& tokens, const Tensor& from, const Tensor& prev) {
  KS_CHECK(tokens.dtype == DType::I32 && from.dtype == DType::I32 && prev.dtype == DType::I32 &&
               from.numel() == tokens.numel() && prev.cols() == int64_t{sizeof(SampleOut) / 4},
           "feed_sampled shape mismatch: tokens {} from {} prev {}", tokens.describe(), from.describe(),
           prev.describe());
  if (skipped(ctx, "feed_sampled")) return;
  registries().feed_sampled.run({tokens, from, prev}, ctx);
}

std::vector<float> RopeParams::inv_freq() const {
  std::vector<float> f(rot_dim / 2);
  constexpr double kPi = 3.14159265358979323846;
  for (int i = 0; i < rot_dim / 2; ++i) {
    double freq = 1.0 / std::pow(static_cast<double>(theta), 2.0 * i / rot_dim);
    if (llama3_factor > 0) {
      // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth blend between.
      const double low_wavelen = llama3_original_max_pos / llama3_low_freq_factor;
      const double high_wavelen = llama3_original_max_pos / llama3_high_freq_factor;
      const double wavelen = 2 * kPi / freq;
      if (wavelen > low_wavelen) {
        freq /= llama3_factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (llama3_original_max_pos / wavelen - llama3_low_freq_factor) /
                              (llama3_high_freq_factor - llama3_low_freq_factor);
        freq = (1 - smooth) * freq / llama3_factor + smooth * freq;
      }
    }
    if (!freq_factors.empty()) freq /= freq_factors.at(i);
    f[i] = static_cast<float>(freq / linear_factor);
  }
  return f;
}

}  // namespace kestrel::ops
