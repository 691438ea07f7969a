#include "backends/cuda/register.h"

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_tensor.h"
#include "backends/cuda/gemm_cublaslt.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/runtime.h"
#include "core/error.h"
#include "core/kv_codec.h"
#include "core/log.h"
#include "core/quant_groups.h"
#include "ops/dispatch.h"

namespace kestrel::backends::cuda {
namespace {

using namespace ops;

constexpr int kPriority = 10;
constexpr int kFastPriority = 20;     // preferred over kPriority when it supports the call
constexpr int kFallbackPriority = 1;  // only where no faster variant supports the call
constexpr int64_t kGemvMaxRows = 16384;

// Sets *why and returns false; keeps the capability checks one line each.
bool reject(std::string* why, std::string reason) {
  if (why) *why = std::move(reason);
  return false;
}

bool on_device(std::initializer_list<const Tensor*> ts, std::string* why) {
  for (const Tensor* t : ts)
    if (t->device != Device::Cuda) return reject(why, t->describe() + " is not on the CUDA device");
  return true;
}

bool is_act(DType t) {
  return t == DType::F32 || t == DType::BF16;
}

bool same_act(std::initializer_list<const Tensor*> ts, std::string* why) {
  const DType d = (*ts.begin())->dtype;
  for (const Tensor* t : ts)
    if (t->dtype != d || !is_act(d)) return reject(why, "activations must share one dtype, f32 or bf16");
  return true;
}

// ---- elementwise family ----

// Pages the CUDA attention kernels read: bf16 values, or codes with their params (the generic and decode
// kernels).
bool readable_pages(const KvLayer& c) {
  if (c.k.dtype != c.v.dtype || !is_kv_page(c.k, c.k_params) || !is_kv_page(c.v, c.v_params)) return false;
  if (c.k.dtype == DType::BF16) return true;
  return c.has_params() && c.group() <= quant::kKvMaxGroup && c.v_params.dim(3) == c.k_params.dim(3);
}

// What the cache writes produce: f32, f16 and the readable pages, one type for K and V.
bool writable_pages(const KvLayer& c, std::string* why) {
  const bool plain = !c.has_params() && (c.k.dtype == DType::F16 || c.k.dtype == DType::F32) && c.v.dtype == c.k.dtype;
  return plain || readable_pages(c) ||
         reject(why, "cache pages must be bf16, f16, f32 or fp8/u8/u4/u2 codes with params, the same for K and V");
}

// The pages as the cache-write launches take them.
KvPages pages_of(const KvLayer& c) {
  KvPages p;
  p.cache_t = c.k.dtype;
  p.k = c.k.data;
  p.v = c.v.data;
  p.k_params = c.k_params.data;
  p.v_params = c.v_params.data;
  p.group = static_cast<int>(c.group());
  p.n_slots = c.k.dim(0) * c.k.dim(1);
  return p;
}

void register_elementwise(Registries& r) {
  r.embed.add({"cuda.embed", Device::Cuda, kPriority,
               [](const EmbedArgs& a, std::string* why) {
                 if (!on_device({&a.table, &a.ids, &a.out}, why)) return false;
                 if (a.table.dtype != DType::F32 && a.table.dtype != DType::F16 && a.table.dtype != DType::BF16)
                   return reject(why, "quantized tables are dequantized to bf16 at load on CUDA");
                 if (a.ids.dtype != DType::I32 || !is_act(a.out.dtype)) return reject(why, "ids i32, out f32/bf16");
                 return a.out.numel() == a.ids.numel() * a.table.cols() || reject(why, "out shape mismatch");
               },
               [](const EmbedArgs& a, const Context& ctx) {
                 launch_embed(a.table.dtype, a.table.data, a.table.rows(), a.table.cols(), a.ids.ptr<int32_t>(),
                              a.ids.numel(), a.out.dtype, a.out.data, a.scale, errors_of(ctx), stream_of(ctx));
               }});
  r.scatter_rows.add({"cuda.scatter_rows", Device::Cuda, kPriority,
                      [](const ScatterRowsArgs& a, std::string* why) {
                        return on_device({&a.src, &a.rows, &a.dst}, why) && same_act({&a.src, &a.dst}, why);
                      },
                      [](const ScatterRowsArgs& a, const Context& ctx) {
                        launch_scatter_rows(a.dst.dtype, a.src.data, a.rows.ptr<int32_t>(), a.rows.numel(),
                                            a.dst.cols(), a.dst.data, a.dst.rows(), stream_of(ctx));
                      }});
  r.rmsnorm.add({"cuda.rmsnorm", Device::Cuda, kPriority,
                 [](const RmsnormArgs& a, std::string* why) {
                   return on_device({&a.x, &a.w, &a.y}, why) && same_act({&a.x, &a.y}, why) &&
                          (is_act(a.w.dtype) || reject(why, "weight must be f32 or bf16"));
                 },
                 [](const RmsnormArgs& a, const Context& ctx) {
                   launch_rmsnorm(a.x.dtype, a.x.data, a.w.dtype, a.w.data, a.eps, a.y.data, a.x.rows(), a.x.cols(),
                                  stream_of(ctx));
                 }});
  auto binary_ok = [](const BinaryArgs& a, std::string* why) {
    return on_device({&a.a, &a.b, &a.y}, why) && same_act({&a.a, &a.b, &a.y}, why);
  };
  r.add.add({"cuda.vec", Device::Cuda, kPriority, binary_ok, [](const BinaryArgs& a, const Context& ctx) {
               launch_add(a.y.dtype, a.a.data, a.b.data, a.y.data, a.y.numel(), stream_of(ctx));
             }});
  r.layernorm.add({"cuda.layernorm", Device::Cuda, kPriority,
                   [](const LayernormArgs& a, std::string* why) {
                     if (!on_device({&a.x, &a.w, &a.b, &a.y}, why) || !same_act({&a.x, &a.y}, why)) return false;
                     return (a.w.dtype == DType::F32 && a.b.dtype == DType::F32) ||
                            reject(why, "weight and bias must be f32");
                   },
                   [](const LayernormArgs& a, const Context& ctx) {
                     launch_layernorm(a.x.dtype, a.x.data, a.w.ptr<float>(), a.b.ptr<float>(), a.eps, a.y.data,
                                      a.x.rows(), a.x.cols(), stream_of(ctx));
                   }});
  r.gelu.add({"cuda.vec", Device::Cuda, kPriority,
              [](const UnaryArgs& a, std::string* why) {
                return on_device({&a.x, &a.y}, why) && same_act({&a.x, &a.y}, why);
              },
              [](const UnaryArgs& a, const Context& ctx) {
                launch_gelu(a.x.dtype, a.x.data, a.y.data, a.x.numel(), stream_of(ctx));
              }});
  r.encoder_attention.add({"cuda.encoder_attention", Device::Cuda, kPriority,
                           [](const EncoderAttentionArgs& a, std::string* why) {
                             if (!on_device({&a.qkv, &a.out}, why) || !same_act({&a.qkv, &a.out}, why)) return false;
                             const Tensor& m = a.batch.key_mask;
                             if (!m.empty() && (m.device != Device::Cuda || m.dtype != DType::I32))
                               return reject(why, "the key mask must be i32 on the device");
                             return a.out.dim(2) <= kEncoderMaxHeadDim ||
                                    reject(why, "head_dim above kEncoderMaxHeadDim");
                           },
                           [](const EncoderAttentionArgs& a, const Context& ctx) {
                             std::vector<EncoderSeqRows> seqs;
                             for (const ops::EncoderSeq& q : a.batch.seqs) seqs.push_back({q.begin, q.len});
                             EncoderAttentionLaunch l;
                             l.act_t = a.qkv.dtype;
                             l.qkv = a.qkv.data;
                             l.key_mask = a.batch.key_mask.empty() ? nullptr : a.batch.key_mask.ptr<int32_t>();
                             l.out = a.out.data;
                             l.seqs = seqs.data();
                             l.n_seqs = static_cast<int>(seqs.size());
                             l.H = static_cast<int>(a.out.dim(1));
                             l.D = static_cast<int>(a.out.dim(2));
                             l.scale = a.batch.scale;
                             launch_encoder_attention(l, stream_of(ctx));
                           }});
  for (const GatedAct act : {GatedAct::Silu, GatedAct::GeluTanh})
    (act == GatedAct::Silu ? r.silu_mul : r.gelu_mul)
        .add({"cuda.vec", Device::Cuda, kPriority, binary_ok, [act](const BinaryArgs& a, const Context& ctx) {
                launch_act_mul(a.y.dtype, act, a.a.data, a.b.data, a.y.data, a.y.numel(), stream_of(ctx));
              }});
  r.add_rmsnorm.add({"cuda.rmsnorm", Device::Cuda, kPriority,
                     [](const AddRmsnormArgs& a, std::string* why) {
                       return on_device({&a.x, &a.r, &a.w, &a.y}, why) && same_act({&a.x, &a.r, &a.y}, why) &&
                              (is_act(a.w.dtype) || reject(why, "weight must be f32 or bf16"));
                     },
                     [](const AddRmsnormArgs& a, const Context& ctx) {
                       launch_add_rmsnorm(a.x.dtype, a.x.data, a.r.data, a.w.dtype, a.w.data, a.eps, a.y.data,
                                          a.x.rows(), a.x.cols(), stream_of(ctx));
                     }});
  for (const GatedAct act : {GatedAct::Silu, GatedAct::GeluTanh})
    (act == GatedAct::Silu ? r.swiglu : r.geglu)
        .add({"cuda.vec", Device::Cuda, kPriority,
              [](const SwigluArgs& a, std::string* why) {
                return on_device({&a.gate_up, &a.y}, why) && same_act({&a.gate_up, &a.y}, why);
              },
              [act](const SwigluArgs& a, const Context& ctx) {
                launch_gated(a.y.dtype, act, a.gate_up.data, a.y.data, a.y.rows(), a.y.cols(), stream_of(ctx));
              }});
  r.rope.add({"cuda.rope", Device::Cuda, kPriority,
              [](const RopeArgs& a, std::string* why) {
                if (!on_device({&a.x, &a.positions}, why) || !same_act({&a.x}, why)) return false;
                if (a.positions.dtype != DType::I32) return reject(why, "positions must be i32");
                return a.p.rot_dim / 2 <= kMaxRopePairs || reject(why, "rot_dim above 2 * kMaxRopePairs");
              },
              [](const RopeArgs& a, const Context& ctx) {
                const std::vector<float> inv_freq = a.p.inv_freq();
                launch_rope(a.x.dtype, a.x.data, a.positions.ptr<int32_t>(), a.x.dim(0), a.x.dim(1), a.x.dim(2),
                            a.p.style == RopeParams::Style::Adjacent, a.p.rot_dim, inv_freq.data(), stream_of(ctx));
              }});
  r.kv_write.add({"cuda.kv_write", Device::Cuda, kPriority,
                  [](const KvWriteArgs& a, std::string* why) {
                    if (!on_device({&a.k, &a.v, &a.slots, &a.cache.k, &a.cache.v}, why) || !same_act({&a.k, &a.v}, why))
                      return false;
                    if (a.cache.has_params() && !on_device({&a.cache.k_params, &a.cache.v_params}, why)) return false;
                    if (!writable_pages(a.cache, why)) return false;
                    return a.slots.dtype == DType::I32 || reject(why, "slots must be i32");
                  },
                  [](const KvWriteArgs& a, const Context& ctx) {
                    const int64_t row = a.k.dim(1) * a.k.dim(2);
                    launch_kv_write(a.k.dtype, a.k.data, a.v.data, a.slots.ptr<int32_t>(), a.k.dim(0), row,
                                    pages_of(a.cache), errors_of(ctx), stream_of(ctx));
                  }});
  r.rope_kv_write.add({"cuda.rope_kv_write", Device::Cuda, kPriority,
                       [](const RopeKvWriteArgs& a, std::string* why) {
                         if (!on_device({&a.qkv, &a.positions, &a.slots, &a.q_out, &a.cache.k, &a.cache.v}, why) ||
                             !same_act({&a.qkv, &a.q_out}, why))
                           return false;
                         for (const Tensor* n : {a.norm.q, a.norm.k})
                           if (n && (n->device != Device::Cuda || n->dtype != DType::F32))
                             return reject(why, "q/k norm weights must be f32 on the device");
                         if (a.cache.has_params() && !on_device({&a.cache.k_params, &a.cache.v_params}, why))
                           return false;
                         if (!writable_pages(a.cache, why)) return false;
                         if (a.positions.dtype != DType::I32 || a.slots.dtype != DType::I32)
                           return reject(why, "positions and slots must be i32");
                         if (a.q_out.dim(2) > kMaxFusedHeadDim) return reject(why, "head_dim above kMaxFusedHeadDim");
                         return a.p.rot_dim / 2 <= kMaxRopePairs || reject(why, "rot_dim above 2 * kMaxRopePairs");
                       },
                       [](const RopeKvWriteArgs& a, const Context& ctx) {
                         const std::vector<float> inv_freq = a.p.inv_freq();
                         RopeKvWriteLaunch l;
                         l.act_t = a.qkv.dtype;
                         l.qkv = a.qkv.data;
                         l.positions = a.positions.ptr<int32_t>();
                         l.slots = a.slots.ptr<int32_t>();
                         l.T = a.qkv.rows();
                         l.H = static_cast<int>(a.q_out.dim(1));
                         l.Hkv = static_cast<int>(a.cache.k.dim(2));
                         l.D = static_cast<int>(a.q_out.dim(2));
                         l.adjacent = a.p.style == RopeParams::Style::Adjacent;
                         l.rot_dim = a.p.rot_dim;
                         l.inv_freq = inv_freq.data();
                         l.q_norm = a.norm.q ? a.norm.q->ptr<float>() : nullptr;
                         l.k_norm = a.norm.k ? a.norm.k->ptr<float>() : nullptr;
                         l.eps = a.norm.eps;
                         l.q_out = a.q_out.data;
                         l.pages = pages_of(a.cache);
                         l.errors = errors_of(ctx);
                         launch_rope_kv_write(l, stream_of(ctx));
                       }});
}

// ---- matmul ----

// x bf16 and y f32/bf16 on the device, the bias an f32 device vector of w's rows, w in rows.
bool matmul_io_ok(const MatmulArgs& a, std::string* why) {
  if (!on_device({&a.x, &a.w.weight, &a.y}, why)) return false;
  if (a.w.layout != WeightLayout::Rows) return reject(why, "these kernels read weights in rows");
  if (a.bias &&
      (a.bias->device != Device::Cuda || a.bias->dtype != DType::F32 || a.bias->numel() != a.w.out_features()))
    return reject(why, "bias must be an f32 device vector of w's rows");
  if (a.x.dtype != DType::BF16) return reject(why, "CUDA matmul takes bf16 x");
  return is_act(a.y.dtype) || reject(why, "y must be f32 or bf16");
}

// Dense w: bf16 (quantized: false) or a GGUF weight type (true).
bool matmul_common(const MatmulArgs& a, std::string* why, bool quantized = false) {
  if (!matmul_io_ok(a, why)) return false;
  if (a.w.grouped()) return reject(why, "grouped integer weights: the cuda.gmv and cuda.gdequant_* variants");
  if (a.w.scaled()) return reject(why, "W8A8 weights: the cuda.w8a8 variant");
  if (quantized && !quant::is_weight_type(a.w.weight.dtype))
    return reject(why, "w is not a GGUF quantized weight type");
  if (!quantized && a.w.weight.dtype != DType::BF16)
    return reject(why, "w is not bf16 (quantized w: the cuda.q* variants)");
  return true;
}

// Grouped integer w (core/linear.h) with its group tensors on the device.
bool grouped_common(const MatmulArgs& a, std::string* why) {
  if (!matmul_io_ok(a, why)) return false;
  if (!a.w.grouped()) return reject(why, "w is not in a grouped integer format");
  const IntGroups& g = a.w.groups;
  for (const Tensor* t : {&g.scales, &g.zeros, &g.g_idx})
    if (!t->empty() && t->device != Device::Cuda) return reject(why, "w's group tensors are not on the CUDA device");
  return (a.w.in_features() <= INT32_MAX && a.w.out_features() <= INT32_MAX) ||
         reject(why, "w above 2^31 rows or columns");
}

// A kernel's refusals of a grouped weight (gmv_decline, gmma_decline in kernels.h).
using GroupedDecline = const char* (*)(DType codes_t, int K, int group_size, int groups, bool act_order);
const char* declined(GroupedDecline decline, const Linear& w) {
  return decline(w.weight.dtype, static_cast<int>(w.in_features()), static_cast<int>(w.groups.group_size),
                 static_cast<int>(w.n_groups()), !w.groups.g_idx.empty());
}

// What the kernels that stream code rows in 16-byte loads (cuda.gmv, cuda.gmma) need beyond grouped_common:
// a weight their `decline` takes, and x and the code rows 16-byte aligned.
bool streams_codes(const MatmulArgs& a, std::string* why, GroupedDecline decline) {
  if (!grouped_common(a, why)) return false;
  if (const char* no = declined(decline, a.w)) return reject(why, no);
  const auto misaligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 != 0; };
  return !(misaligned(a.x.data) || misaligned(a.w.weight.data)) ||
         reject(why, "x and the code rows must be 16-byte aligned");
}

GroupedWeight grouped_of(const Linear& w) {
  GroupedWeight g;
  g.codes_t = w.weight.dtype;
  g.codes = w.weight.data;
  g.row_bytes = w.weight.row_nbytes();
  g.scales = w.groups.scales.data;
  g.zeros = w.groups.zeros.empty() ? nullptr : w.groups.zeros.data;
  g.g_idx = w.groups.g_idx.empty() ? nullptr : w.groups.g_idx.ptr<int32_t>();
  g.group_size = static_cast<int>(std::min<int64_t>(w.groups.group_size, INT32_MAX));
  g.groups = static_cast<int>(w.n_groups());
  return g;
}

// A lane's scratch buffer, grown to the largest request (the first forward step sizes it, before any graph
// is recorded: Executor::capture_graphs runs every bucket eagerly first); growing moves it, so recorded
// graphs are recorded again. `zeroed` buffers are zero when (re)allocated.
class GrowingBuffer {
 public:
  GrowingBuffer(ops::Runtime& lane, DType dtype, bool zeroed) : lane_(&lane), dtype_(dtype), zeroed_(zeroed) {}
  void* get(int64_t elems, cudaStream_t s) {
    if (elems > buf_.numel()) {
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      CUDA_CHECK(cudaStreamIsCapturing(s, &status));
      KS_CHECK(status == cudaStreamCaptureStatusNone,
               "internal error: a CUDA workspace must grow to {} MiB while a CUDA graph is recorded",
               row_bytes(dtype_, elems) >> 20);
      CUDA_CHECK(cudaStreamSynchronize(s));  // the old buffer may still be read
      buf_ = {};
      buf_ = lane_->allocate(dtype_, {elems});
      if (zeroed_) lane_->fill_async(buf_.data, 0, buf_.nbytes());
      lane_->bump_generation();
    }
    return buf_.data;
  }

 private:
  ops::Runtime* lane_;
  DType dtype_;
  bool zeroed_;
  Tensor buf_;
};

// The bf16 copy of a quantized matrix that the large-M variants multiply.
struct DequantWorkspace : GrowingBuffer {
  explicit DequantWorkspace(ops::Runtime& lane) : GrowingBuffer(lane, DType::BF16, false) {}
};
// cuda.gmma's split-K partials and tickets (kernels.h GmmaScratch; the tickets start zero and stay so).
struct GmmaPartials : GrowingBuffer {
  explicit GmmaPartials(ops::Runtime& lane) : GrowingBuffer(lane, DType::F32, false) {}
};
struct GmmaTickets : GrowingBuffer {
  explicit GmmaTickets(ops::Runtime& lane) : GrowingBuffer(lane, DType::I32, true) {}
};
// cuda.w8a8's quantized rows of x, their scales, and the unscaled product where an epilogue scales it.
struct W8Codes : GrowingBuffer {
  explicit W8Codes(ops::Runtime& lane) : GrowingBuffer(lane, DType::U8, false) {}
};
struct W8RowScales : GrowingBuffer {
  explicit W8RowScales(ops::Runtime& lane) : GrowingBuffer(lane, DType::F32, false) {}
};
struct W8Product : GrowingBuffer {
  explicit W8Product(ops::Runtime& lane) : GrowingBuffer(lane, DType::F32, false) {}  // i32 or f32, 4 bytes each
};

// W8A8 (core/w8a8.h): x's rows quantized into the lane's workspace, then cuBLASLt's fp8 GEMM applying the
// row and channel scales itself, or (int8, or fp8 where cuBLASLt refuses that scaling) its unscaled product
// and the epilogue. The GEMM runs on the rows padded to a multiple of 16 (zero codes): cuBLASLt's 8-bit
// kernels ask for aligned dimensions, and a decode step's few rows cost no more weight reads padded.
void w8a8_matmul(const MatmulArgs& a, const Context& ctx) {
  const int64_t M = a.x.rows(), N = a.w.out_features(), K = a.x.cols();
  if (M == 0) return;
  const int64_t Mp = (M + 15) / 16 * 16;
  CudaLane& lane = lane_of(ctx);
  const cudaStream_t s = stream_of(ctx);
  const DType code_t = a.w.weight.dtype;
  auto* codes = static_cast<uint8_t*>(lane.state<W8Codes>().get(Mp * K, s));
  auto* x_scales = static_cast<float*>(lane.state<W8RowScales>().get(Mp, s));
  const auto* w_scales = a.w.channel_scales.ptr<float>();
  const float* bias = a.bias ? a.bias->ptr<float>() : nullptr;
  if (Mp > M) {
    lane.fill_async(codes + M * K, 0, static_cast<size_t>((Mp - M) * K));
    lane.fill_async(x_scales + M, 0, static_cast<size_t>(Mp - M) * sizeof(float));
  }
  launch_w8_quantize_rows(a.x.dtype, a.x.data, M, K, code_t, codes, x_scales, s);
  void* product = lane.state<W8Product>().get(Mp * N, s);  // 4 bytes an element: i32, f32, or y's rows
  if (code_t == DType::F8E4M3) {
    void* out = Mp == M ? a.y.data : product;
    if (cublaslt_matmul_w8(lane, code_t, codes, a.w.weight.data, x_scales, w_scales, a.y.dtype, out, Mp, N, K)) {
      if (out != a.y.data) lane.copy_async(a.y.data, out, row_bytes(a.y.dtype, M * N));
      if (bias) launch_add_bias(a.y.dtype, a.y.data, bias, M, N, s);
      return;
    }
    log::warn_once("matmul/cuda.w8a8/unscaled",
                   "matmul: cuBLASLt has no fp8 GEMM with row and channel scales here; cuda.w8a8 scales an f32 "
                   "product in a separate pass instead (slower)");
  }
  KS_CHECK(cublaslt_matmul_w8(lane, code_t, codes, a.w.weight.data, nullptr, nullptr, DType::F32, product, Mp, N, K),
           "cuBLASLt has no {} GEMM for {}x{}x{}", dtype_name(code_t), Mp, N, K);
  launch_w8_epilogue(code_t == DType::I8 ? DType::I32 : DType::F32, product, x_scales, w_scales, bias, a.y.dtype,
                     a.y.data, M, N, s);
}

// w as bf16 in the lane's workspace: GGUF blocks (dequant.cu) or grouped codes (gmv.cu).
void* dequantize(const MatmulArgs& a, const Context& ctx) {
  const int N = static_cast<int>(a.w.out_features()), K = static_cast<int>(a.w.in_features());
  void* ws = lane_of(ctx).state<DequantWorkspace>().get(int64_t{N} * K, stream_of(ctx));
  if (a.w.dense())
    launch_dequant_bf16(a.w.weight.dtype, a.w.weight.data, ws, N, K, stream_of(ctx));
  else
    launch_grouped_dequant_bf16(grouped_of(a.w), ws, N, K, stream_of(ctx));
  return ws;
}

// y = x . dequantize(w)^T (+ bias) by cuBLASLt: the large-M path of the quantized formats.
void dequant_cublaslt(const MatmulArgs& a, const Context& ctx) {
  if (a.x.rows() == 0) return;
  const void* w = dequantize(a, ctx);
  cublaslt_matmul(lane_of(ctx), a.x.data, w, a.y.dtype, a.y.data, a.x.rows(), a.w.out_features(), a.x.cols());
  if (a.bias)
    launch_add_bias(a.y.dtype, a.y.data, a.bias->ptr<float>(), a.x.rows(), a.w.out_features(), stream_of(ctx));
}

void register_matmul(Registries& r) {
  r.matmul.add({"cuda.gemv", Device::Cuda, kFastPriority,
                [](const MatmulArgs& a, std::string* why) {
                  if (!matmul_common(a, why)) return false;
                  if (a.x.rows() > kGemvMaxM) return reject(why, "more than 8 rows: a GEMM shape");
                  // Measured on H100 (BENCHMARKS.md): from ~16K output rows cuBLASLt's kernels stream w
                  // faster (gate_up 28672x4096: 81 vs 88 us; lm_head: 370 vs 378 us).
                  if (a.w.out_features() >= kGemvMaxRows) return reject(why, "wide matrix: cuBLASLt is faster");
                  return a.x.cols() % 32 == 0 || reject(why, "K must be a multiple of 32");
                },
                [](const MatmulArgs& a, const Context& ctx) {
                  launch_gemv(a.x.data, DType::BF16, a.w.weight.data, a.bias ? a.bias->ptr<float>() : nullptr,
                              a.y.dtype, a.y.data, static_cast<int>(a.x.rows()), static_cast<int>(a.w.out_features()),
                              static_cast<int>(a.x.cols()), lane_of(ctx).sm_count(), stream_of(ctx));
                }});
  r.matmul.add({"cuda.cublaslt", Device::Cuda, kPriority,
                [](const MatmulArgs& a, std::string* why) {
                  return matmul_common(a, why) && (a.x.cols() % 8 == 0 || reject(why, "K must be a multiple of 8"));
                },
                [](const MatmulArgs& a, const Context& ctx) {
                  if (a.x.rows() == 0) return;
                  cublaslt_matmul(lane_of(ctx), a.x.data, a.w.weight.data, a.y.dtype, a.y.data, a.x.rows(),
                                  a.w.out_features(), a.x.cols());
                  if (a.bias)
                    launch_add_bias(a.y.dtype, a.y.data, a.bias->ptr<float>(), a.x.rows(), a.w.out_features(),
                                    stream_of(ctx));
                },
                nullptr, /*batch_dependent=*/true});
  // Every M with one fixed reduction (fixed_reduction.cuh): what batch-invariant mode runs in cuBLASLt's
  // place, ranked below it because cuBLASLt is faster for large M.
  r.matmul.add({"cuda.gemm_fixed", Device::Cuda, kPriority - 1,
                [](const MatmulArgs& a, std::string* why) {
                  return matmul_common(a, why) && (a.x.cols() % 32 == 0 || reject(why, "K must be a multiple of 32"));
                },
                [](const MatmulArgs& a, const Context& ctx) {
                  launch_gemm_fixed(a.x.data, a.w.weight.data, a.bias ? a.bias->ptr<float>() : nullptr, a.y.dtype,
                                    a.y.data, static_cast<int>(a.x.rows()), static_cast<int>(a.w.out_features()),
                                    static_cast<int>(a.x.cols()), lane_of(ctx).sm_count(), stream_of(ctx));
                }});

  // GGUF weight types (BENCHMARKS.md, "Quantized matmul"): Q4_K and Q6_K up to kQmmaMaxM rows take
  // cuda.qmma (integer weights on tensor cores, qmma.cu); otherwise up to kQmvMaxM rows cuda.qmv decodes the
  // weights in f32 as it streams them; up to kFlatMaxM the flat GEMM decodes them to bf16 fragments for the
  // tensor cores (cuda.qgemv); beyond, the matrix is dequantized to bf16 once per call and multiplied by
  // cuBLASLt. Batch-invariant mode passes over cuda.qmv and the cuBLASLt path: the flat GEMM, then
  // cuda.qgemm_fixed (the fixed-reduction GEMM of the dequantized matrix: the same bits).
  auto quant_ok = [](const MatmulArgs& a, std::string* why) {
    return matmul_common(a, why, true) && (a.x.cols() % 32 == 0 || reject(why, "K must be a multiple of 32"));
  };
  auto bias_of = [](const MatmulArgs& a) { return a.bias ? a.bias->ptr<float>() : nullptr; };
  r.matmul.add({"cuda.qmma", Device::Cuda, kFastPriority + 1,
                [quant_ok](const MatmulArgs& a, std::string* why) {
                  return quant_ok(a, why) &&
                         (qmma_supports(a.w.weight.dtype) || reject(why, "Q4_K or Q6_K weights only")) &&
                         (a.x.rows() <= kQmmaMaxM || reject(why, "more than 16 rows: the flat GEMM's"));
                },
                [bias_of](const MatmulArgs& a, const Context& ctx) {
                  launch_qmma(a.x.data, a.w.weight.dtype, a.w.weight.data, bias_of(a), a.y.dtype, a.y.data,
                              static_cast<int>(a.x.rows()), static_cast<int>(a.w.out_features()),
                              static_cast<int>(a.x.cols()), stream_of(ctx));
                },
                nullptr, /*batch_dependent=*/true});
  r.matmul.add({"cuda.qmv", Device::Cuda, kFastPriority,
                [quant_ok](const MatmulArgs& a, std::string* why) {
                  return quant_ok(a, why) &&
                         (a.x.rows() <= kQmvMaxM || reject(why, "more than 4 rows: the flat GEMM's"));
                },
                [bias_of](const MatmulArgs& a, const Context& ctx) {
                  launch_qmv(a.x.data, a.w.weight.dtype, a.w.weight.data, bias_of(a), a.y.dtype, a.y.data,
                             static_cast<int>(a.x.rows()), static_cast<int>(a.w.out_features()),
                             static_cast<int>(a.x.cols()), stream_of(ctx));
                },
                nullptr, /*batch_dependent=*/true});
  r.matmul.add({"cuda.qgemv", Device::Cuda, kFastPriority - 1,
                [quant_ok](const MatmulArgs& a, std::string* why) {
                  return quant_ok(a, why) && (a.x.rows() <= kFlatMaxM || reject(why, "more than 64 rows"));
                },
                [bias_of](const MatmulArgs& a, const Context& ctx) {
                  launch_gemv(a.x.data, a.w.weight.dtype, a.w.weight.data, bias_of(a), a.y.dtype, a.y.data,
                              static_cast<int>(a.x.rows()), static_cast<int>(a.w.out_features()),
                              static_cast<int>(a.x.cols()), lane_of(ctx).sm_count(), stream_of(ctx));
                }});
  r.matmul.add({"cuda.qdequant_cublaslt", Device::Cuda, kPriority, quant_ok, dequant_cublaslt, nullptr,
                /*batch_dependent=*/true});
  r.matmul.add(
      {"cuda.qgemm_fixed", Device::Cuda, kPriority - 1, quant_ok, [bias_of](const MatmulArgs& a, const Context& ctx) {
         const int M = static_cast<int>(a.x.rows()), N = static_cast<int>(a.w.out_features()),
                   K = static_cast<int>(a.x.cols());
         if (M <= kFlatMaxM)
           return launch_gemv(a.x.data, a.w.weight.dtype, a.w.weight.data, bias_of(a), a.y.dtype, a.y.data, M, N, K,
                              lane_of(ctx).sm_count(), stream_of(ctx));
         launch_gemm_fixed(a.x.data, dequantize(a, ctx), bias_of(a), a.y.dtype, a.y.data, M, N, K,
                           lane_of(ctx).sm_count(), stream_of(ctx));
       }});

  // Grouped integer weights (GPTQ/AWQ; docs/quantized_checkpoints.md): up to kGmvMaxM rows cuda.gmv streams
  // the codes and decodes them exactly in f32; beyond (and for what it declines: U3 codes, act-order, chunks
  // that straddle groups) the matrix is decoded to bf16 in the lane's workspace once per call and cuBLASLt
  // multiplies it. cuda.gmma (U4 codes on tensor cores at every M, weights rounded to f16; one token on rows
  // below kGmmaMinK1 it leaves to cuda.gmv, faster there) measured faster than both from two rows on
  // (BENCHMARKS "W4A16 g128 ... run 2"), but its outputs have not yet been checked on a GPU (OpsHarness.Matmul
  // did not run there), so it sits below the checked paths and runs where asked for (--variant
  // matmul=cuda.gmma) until the harness has passed on a device. The rows of these kernels depend on M, so, as
  // for cuda.qmv, batch-invariant mode passes over them and runs cuda.gdequant_gemm_fixed at every M (the
  // fixed-reduction GEMM of the dequantized matrix).
  r.matmul.add(
      {"cuda.gmma", Device::Cuda, kPriority - 2,
       [](const MatmulArgs& a, std::string* why) {
         if (!streams_codes(a, why, gmma_decline)) return false;
         // One token with rows shorter than kGmmaMinK1: cuda.gmv's warps sweep whole rows and were
         // faster there (H100, llama3-8b gate_up 31.7 vs 44.1 us, qkv 10.3 vs 11.2); gmma's split K
         // wins on longer rows (down, K = 14336: 21.9 vs 24.0) and from two tokens on.
         return !(a.x.rows() == 1 && a.x.cols() < kGmmaMinK1 && !declined(gmv_decline, a.w)) ||
                reject(why, "one token and K below 8192: cuda.gmv's");
       },
       [bias_of](const MatmulArgs& a, const Context& ctx) {
         const int M = static_cast<int>(a.x.rows()), N = static_cast<int>(a.w.out_features()),
                   K = static_cast<int>(a.x.cols()), sms = lane_of(ctx).sm_count();
         const GmmaScratchSize need = gmma_scratch_size(a.y.dtype, M, N, K, sms);
         GmmaScratch scratch;
         if (need.tickets) {
           CudaLane& lane = lane_of(ctx);
           scratch.partials =
               static_cast<float*>(lane.state<GmmaPartials>().get(static_cast<int64_t>(need.partials), stream_of(ctx)));
           scratch.tickets =
               static_cast<int*>(lane.state<GmmaTickets>().get(static_cast<int64_t>(need.tickets), stream_of(ctx)));
         }
         launch_gmma(a.x.data, grouped_of(a.w), bias_of(a), a.y.dtype, a.y.data, M, N, K, sms, scratch, stream_of(ctx));
       },
       nullptr, /*batch_dependent=*/true});
  r.matmul.add({"cuda.w8a8", Device::Cuda, kPriority,
                [](const MatmulArgs& a, std::string* why) {
                  if (!a.w.scaled()) return reject(why, "w is not in the W8A8 format");
                  if (!on_device({&a.x, &a.w.weight, &a.w.channel_scales, &a.y}, why)) return false;
                  if (a.x.dtype != DType::BF16 && a.x.dtype != DType::F32) return reject(why, "x must be bf16 or f32");
                  if (!is_act(a.y.dtype)) return reject(why, "y must be f32 or bf16");
                  if (a.bias && (a.bias->device != Device::Cuda || a.bias->dtype != DType::F32 ||
                                 a.bias->numel() != a.w.out_features()))
                    return reject(why, "bias must be an f32 device vector of w's rows");
                  // cuBLASLt's 8-bit GEMMs take dimensions in multiples of 16.
                  return (a.x.cols() % 16 == 0 && a.w.out_features() % 16 == 0) ||
                         reject(why, "K and N must be multiples of 16");
                },
                w8a8_matmul, nullptr, /*batch_dependent=*/true});  // cuBLASLt picks its reduction by shape
  r.matmul.add({"cuda.gmv", Device::Cuda, kFastPriority,
                [](const MatmulArgs& a, std::string* why) {
                  if (a.x.rows() > kGmvMaxM) return reject(why, "more than 8 rows: the dequantizing GEMMs'");
                  return streams_codes(a, why, gmv_decline);
                },
                [bias_of](const MatmulArgs& a, const Context& ctx) {
                  launch_gmv(a.x.data, grouped_of(a.w), bias_of(a), a.y.dtype, a.y.data, static_cast<int>(a.x.rows()),
                             static_cast<int>(a.w.out_features()), static_cast<int>(a.x.cols()), stream_of(ctx));
                },
                nullptr, /*batch_dependent=*/true});
  r.matmul.add({"cuda.gdequant_cublaslt", Device::Cuda, kPriority,
                [](const MatmulArgs& a, std::string* why) {
                  return grouped_common(a, why) && (a.x.cols() % 8 == 0 || reject(why, "K must be a multiple of 8"));
                },
                dequant_cublaslt, nullptr, /*batch_dependent=*/true});
  r.matmul.add({"cuda.gdequant_gemm_fixed", Device::Cuda, kPriority - 1,
                [](const MatmulArgs& a, std::string* why) {
                  return grouped_common(a, why) && (a.x.cols() % 32 == 0 || reject(why, "K must be a multiple of 32"));
                },
                [bias_of](const MatmulArgs& a, const Context& ctx) {
                  launch_gemm_fixed(a.x.data, dequantize(a, ctx), bias_of(a), a.y.dtype, a.y.data,
                                    static_cast<int>(a.x.rows()), static_cast<int>(a.w.out_features()),
                                    static_cast<int>(a.x.cols()), lane_of(ctx).sm_count(), stream_of(ctx));
                }});
}

// ---- attention ----

// What every CUDA attention variant needs, whatever the head size.
bool attention_inputs_ok(const AttentionArgs& a, std::string* why) {
  if (!on_device({&a.q, &a.out, &a.cache.k, &a.cache.v, &a.batch.block_tables, &a.batch.seq_info}, why)) return false;
  if (a.q.dtype != DType::BF16 || a.out.dtype != DType::BF16) return reject(why, "CUDA attention takes bf16 q and out");
  if (a.cache.has_params() && !on_device({&a.cache.k_params, &a.cache.v_params}, why)) return false;
  if (!readable_pages(a.cache))
    return reject(why, "CUDA attention reads bf16 pages or fp8/u8/u4/u2 codes with params, the same for K and V");
  const int64_t n = static_cast<int64_t>(a.batch.seqs.size());
  if (a.batch.block_tables.dtype != DType::I32 || a.batch.block_tables.ndim() != 2 ||
      a.batch.block_tables.dim(0) != n || a.batch.seq_info.dtype != DType::I32 || a.batch.seq_info.numel() != 3 * n)
    return reject(why, "batch needs device block_tables i32 [n_seqs, max_blocks] and seq_info i32 [n_seqs, 3]");
  return true;
}

// The tiled kernels are instantiated for the head sizes of the models they were built for.
bool tiled_attention_ok(const AttentionArgs& a, std::string* why) {
  if (!attention_inputs_ok(a, why)) return false;
  if (a.batch.window > 0) return reject(why, "no sliding window (cuda.attention_generic takes one)");
  const int64_t d = a.q.dim(2);
  return d == 64 || d == 128 || reject(why, "head_dim must be 64 or 128");
}

// The decode kernel reads bf16 pages and the code pages attention_decode_codes.cu is built for.
bool decode_pages_ok(const AttentionArgs& a, std::string* why) {
  if (a.cache.k.dtype == DType::BF16) return true;
  const char* no = decode_codes_decline(a.cache.k.dtype, static_cast<int>(a.q.dim(2)),
                                        static_cast<int>(a.cache.group()), static_cast<int>(a.cache.block_size()));
  return !no || reject(why, no);
}

// Validates the host view of the batch (the kernels trust it) and fills the launch description.
AttentionLaunch describe(const AttentionArgs& a, int* max_q, int* max_kv) {
  const int64_t T = a.q.dim(0), bs = a.cache.block_size();
  const int64_t max_blocks = a.batch.block_tables.dim(1);
  *max_q = *max_kv = 0;
  for (const AttentionSeq& s : a.batch.seqs) {
    KS_CHECK(s.q_len >= 0 && s.q_begin >= 0 && s.q_begin + int64_t{s.q_len} <= T && s.kv_len >= s.q_len &&
                 (s.q_len > 0 || s.kv_len == 0),
             "attention: sequence rows [{}, +{}) with kv_len {} do not fit q {}", s.q_begin, s.q_len, s.kv_len,
             a.q.describe());
    KS_CHECK(s.kv_len <= max_blocks * bs, "attention: kv_len {} exceeds the {} blocks of the block table", s.kv_len,
             max_blocks);
    *max_q = std::max(*max_q, s.q_len);
    *max_kv = std::max(*max_kv, s.kv_len);
  }
  AttentionLaunch l;
  l.q = a.q.data;
  l.out = a.out.data;
  l.k_cache = a.cache.k.data;
  l.v_cache = a.cache.v.data;
  l.block_tables = a.batch.block_tables.ptr<int32_t>();
  l.max_blocks = static_cast<int>(max_blocks);
  l.seq_info = a.batch.seq_info.ptr<int32_t>();
  l.n_seqs = static_cast<int>(a.batch.seqs.size());
  l.n_heads = static_cast<int>(a.q.dim(1));
  l.n_kv_heads = static_cast<int>(a.cache.k.dim(2));
  l.head_dim = static_cast<int>(a.q.dim(2));
  l.block_size = static_cast<int>(bs);
  l.scale = a.batch.scale;
  l.window = a.batch.window;
  l.kv_t = a.cache.k.dtype;
  l.k_params = a.cache.k_params.data;
  l.v_params = a.cache.v_params.data;
  l.kv_group = static_cast<int>(a.cache.group());
  return l;
}

// What the decode variant prepares once per step (ops::AttentionPlan): the split plan for the batch's
// longest sequence and its scratch — split partials and merge tickets, zeroed here; every launch leaves the
// tickets zero again, so a graph that replays the launches needs no memset.
struct DecodeState {
  DecodePlan plan;
  Tensor partials, tickets;
};

std::shared_ptr<void> plan_decode(const AttentionArgs& a, const Context& ctx) {
  int max_q = 0, max_kv = 0;
  const AttentionLaunch l = describe(a, &max_q, &max_kv);
  CudaLane& lane = lane_of(ctx);
  auto st = std::make_shared<DecodeState>();
  st->plan =
      ctx.batch_invariant ? plan_attention_decode_fixed(l, max_kv) : plan_attention_decode(l, max_kv, lane.sm_count());
  if (st->plan.workspace) st->partials = lane.allocate(DType::I8, {static_cast<int64_t>(st->plan.workspace)});
  if (st->plan.counters) {
    st->tickets = lane.allocate(DType::I32, {st->plan.counters});
    lane.fill_async(st->tickets.data, 0, st->tickets.nbytes());
  }
  return st;
}

void run_decode(const AttentionArgs& a, const Context& ctx) {
  std::shared_ptr<void> own;  // a call without a plan (ops harness) plans for itself
  if (!a.state) own = plan_decode(a, ctx);
  const auto& st = *static_cast<const DecodeState*>(a.state ? a.state : own.get());
  int max_q = 0, max_kv = 0;
  const AttentionLaunch l = describe(a, &max_q, &max_kv);
  launch_attention_decode(l, st.plan, st.partials.data, st.tickets.empty() ? nullptr : st.tickets.ptr<int>(),
                          stream_of(ctx));
}

// ---- sampling ----

void register_sampling(Registries& r) {
  r.sample.add({"cuda.sample", Device::Cuda, kPriority,
                [](const SampleArgs& a, std::string* why) {
                  return on_device({&a.logits, &a.rows, &a.out}, why) &&
                         (a.penalties.empty() || on_device({&a.penalties}, why)) &&
                         (a.masks.empty() || on_device({&a.masks}, why)) &&
                         (a.logits.dim(1) <= INT32_MAX || reject(why, "vocabulary above 2^31"));
                },
                [](const SampleArgs& a, const Context& ctx) {
                  launch_sample(a.logits.ptr<float>(), a.logits.dim(0), a.logits.dim(1),
                                static_cast<const SampleRow*>(a.rows.data),
                                a.penalties.empty() ? nullptr : static_cast<PenaltyEntry*>(a.penalties.data),
                                static_cast<SampleOut*>(a.out.data),
                                a.masks.empty() ? nullptr : static_cast<const uint32_t*>(a.masks.data),
                                a.masks.empty() ? 0 : a.masks.rows(), stream_of(ctx));
                }});
  r.feed_sampled.add({"cuda.feed_sampled", Device::Cuda, kPriority,
                      [](const FeedSampledArgs& a, std::string* why) {
                        return on_device({&a.tokens, &a.from, &a.prev}, why);
                      },
                      [](const FeedSampledArgs& a, const Context& ctx) {
                        launch_feed_sampled(a.tokens.ptr<int32_t>(), a.from.ptr<int32_t>(), a.tokens.numel(),
                                            static_cast<const SampleOut*>(a.prev.data), a.prev.rows(), stream_of(ctx));
                      }});
}

void register_attention(Registries& r) {
  r.attention.add({"cuda.decode_splitkv", Device::Cuda, kFastPriority,
                   [](const AttentionArgs& a, std::string* why) {
                     if (!tiled_attention_ok(a, why) || !decode_pages_ok(a, why)) return false;
                     for (const AttentionSeq& s : a.batch.seqs)
                       if (s.q_len != 1) return reject(why, "decode kernel needs q_len == 1 for every sequence");
                     if (a.batch.n_decode >= 0 && a.batch.n_decode < static_cast<int>(a.batch.seqs.size()))
                       return reject(why, "prompt rows take the prefill kernel (AttentionBatch::n_decode)");
                     return true;
                   },
                   run_decode, plan_decode});
  r.attention.add({"cuda.flash_prefill", Device::Cuda, kPriority,
                   [](const AttentionArgs& a, std::string* why) {
                     if (!tiled_attention_ok(a, why)) return false;
                     if (a.cache.k.dtype == DType::BF16) return true;
                     const char* no = prefill_codes_decline(a.cache.k.dtype, static_cast<int>(a.cache.group()));
                     return !no || reject(why, no);
                   },
                   [](const AttentionArgs& a, const Context& ctx) {
                     int max_q = 0, max_kv = 0;
                     const AttentionLaunch l = describe(a, &max_q, &max_kv);
                     launch_attention_prefill(l, max_q, stream_of(ctx));
                   }});
  r.attention.add(
      {"cuda.attention_generic", Device::Cuda, kFallbackPriority,
       [](const AttentionArgs& a, std::string* why) {
         if (!attention_inputs_ok(a, why)) return false;
         const int64_t d = a.q.dim(2);
         return (d % 2 == 0 && d <= kGenericMaxHeadDim) ||
                reject(why, fmt::format("head_dim must be even and at most {}", kGenericMaxHeadDim));
       },
       [](const AttentionArgs& a, const Context& ctx) {
         int max_q = 0, max_kv = 0;
         const AttentionLaunch l = describe(a, &max_q, &max_kv);
         log::warn_once(
             fmt::format("attention/cuda.attention_generic/{}/{}/{}", l.head_dim, l.window > 0, dtype_name(l.kv_t)),
             fmt::format("attention: no tiled CUDA kernel for head_dim {}{}{} (they take 64 and 128 "
                         "without a window); using the slower cuda.attention_generic",
                         l.head_dim, l.window > 0 ? " with a sliding window" : "",
                         l.kv_t != DType::BF16 ? " over " + std::string(dtype_name(l.kv_t)) + " KV pages" : ""));
         launch_attention_generic(l, max_q, stream_of(ctx));
       }});
}

}  // namespace

void register_variants(Registries& r) {
  // Only with a device present, so a GPU-less machine dispatches to the CPU exactly as before.
  if (!cuda_available()) return;
  register_elementwise(r);
  register_matmul(r);
  register_attention(r);
  register_sampling(r);
}

}  // namespace kestrel::backends::cuda
