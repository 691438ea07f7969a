// Placing weights on a device through the CPU lane: DecoderWeights::to_device streams them through
// staging buffers and must give bit for bit what the row-by-row reference gives (placement_reference.h)
// for every source type, fused or not, and WeightUploader must stack parts and split rows across chunks
// correctly.
#include "model/weight_uploader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <random>

#include "../common/random_weights.h"
#include "../common/test_model.h"
#include "backends/backends.h"
#include "core/dequant.h"
#include "core/error.h"
#include "core/half.h"
#include "core/int_codes.h"
#include "core/log.h"
#include "core/quant_blocks.h"
#include "model/decoder_weights.h"
#include "placement_reference.h"

namespace kestrel {
namespace {

Tensor random_weights(std::mt19937& rng, std::vector<int64_t> shape, DType dtype) {
  return testing::random_weights(dtype, std::move(shape), rng, 0.5f);
}

struct Case {
  const char* arch;
  DType wtype;                  // a code type (U2, U3, U4, U8): grouped integer linears
  std::optional<DType> v_type;  // the value projection's type when it differs (as in Q4_K_M files)
  bool tied = false;
  bool act_order = false;  // grouped: each linear with its own g_idx
};

// Two layers, hidden 256 (whole K-quant blocks), 4 query heads and 2 KV heads of 64. With a code type the
// linears are grouped integer ones (groups of 64) and the embedding f16 (such checkpoints never quantize it).
DecoderWeights make_weights(const Case& c, uint32_t seed) {
  const Architecture& arch = architecture_for_hf(c.arch);
  ModelConfig cfg = testing::tiny_config(arch, 64);
  cfg.hidden = 256;
  cfg.ffn = 512;
  cfg.tied_embeddings = c.tied;
  std::mt19937 rng(seed);
  testing::TinyWeights w;
  const bool grouped = is_code_type(c.wtype);
  auto linear = [&](const std::string& name, int64_t n, int64_t k, DType t) {
    if (grouped)
      w.grouped[name] = testing::random_grouped(t, n, k, 64, true, c.act_order, rng, 0.5f);
    else
      w.t[name] = random_weights(rng, {n, k}, t);
  };
  const int64_t qd = cfg.n_heads * cfg.head_dim, kvd = cfg.n_kv_heads * cfg.head_dim;
  w.t["token_embd.weight"] = random_weights(rng, {cfg.vocab, cfg.hidden}, grouped ? DType::F16 : c.wtype);
  w.t["output_norm.weight"] = random_weights(rng, {cfg.hidden}, DType::F32);
  if (!c.tied) linear("output.weight", cfg.vocab, cfg.hidden, c.wtype);
  for (int l = 0; l < cfg.n_layers; ++l) {
    auto n = [l](const char* s) { return "blk." + std::to_string(l) + "." + s; };
    w.t[n("attn_norm.weight")] = random_weights(rng, {cfg.hidden}, DType::F32);
    linear(n("attn_q.weight"), qd, cfg.hidden, c.wtype);
    linear(n("attn_k.weight"), kvd, cfg.hidden, c.wtype);
    linear(n("attn_v.weight"), kvd, cfg.hidden, c.v_type.value_or(c.wtype));
    linear(n("attn_output.weight"), cfg.hidden, qd, c.wtype);
    w.t[n("attn_q.bias")] = random_weights(rng, {qd}, DType::F32);
    w.t[n("attn_k.bias")] = random_weights(rng, {kvd}, DType::F32);
    w.t[n("attn_v.bias")] = random_weights(rng, {kvd}, DType::F32);
    w.t[n("attn_q_norm.weight")] = random_weights(rng, {cfg.head_dim}, DType::F32);
    w.t[n("attn_k_norm.weight")] = random_weights(rng, {cfg.head_dim}, DType::F32);
    w.t[n("ffn_norm.weight")] = random_weights(rng, {cfg.hidden}, DType::F32);
    linear(n("ffn_gate.weight"), cfg.ffn, cfg.hidden, c.wtype);
    linear(n("ffn_up.weight"), cfg.ffn, cfg.hidden, c.wtype);
    linear(n("ffn_down.weight"), cfg.hidden, cfg.ffn, c.wtype);
  }
  return DecoderWeights::load(w, arch, cfg);
}

void expect_same(const Tensor& got, const Tensor& want, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(got.empty(), want.empty());
  if (want.empty()) return;
  EXPECT_EQ(got.dtype, want.dtype);
  ASSERT_EQ(got.shape, want.shape);
  EXPECT_EQ(got.device, want.device);
  EXPECT_EQ(std::memcmp(got.data, want.data, want.nbytes()), 0);
}

void expect_same(const DecoderWeights& got, const DecoderWeights& want) {
  expect_same(got.tok_embd, want.tok_embd, "tok_embd");
  expect_same(got.output_norm, want.output_norm, "output_norm");
  expect_same(got.output.weight, want.output.weight, "output");
  EXPECT_EQ(got.tied(), want.tied());
  ASSERT_EQ(got.layers.size(), want.layers.size());
  for (size_t l = 0; l < want.layers.size(); ++l) {
    const auto g = got.layers[l].vectors(), w = want.layers[l].vectors();
    for (size_t i = 0; i < w.size(); ++i) expect_same(*g[i], *w[i], fmt::format("layer {} vector {}", l, i));
    const auto gl = got.layers[l].linears(), wl = want.layers[l].linears();
    for (size_t i = 0; i < wl.size(); ++i) {
      EXPECT_TRUE(gl[i]->dense());
      expect_same(gl[i]->weight, wl[i]->weight, fmt::format("layer {} linear {}", l, i));
    }
  }
}

TEST(WeightPlacement, ToDeviceMatchesTheRowByRowReference) {
  const ops::Context ctx = backends::make_context(Device::Cpu);
  for (const Case& c :
       {Case{"llama", DType::F32}, Case{"llama", DType::F16, {}, true}, Case{"qwen2", DType::BF16},
        Case{"qwen3", DType::Q8_0}, Case{"llama", DType::Q4_K, DType::Q6_K}, Case{"qwen2", DType::F16, DType::Q8_0},
        Case{"llama", DType::Q5_0, DType::Q5_1}, Case{"qwen3", DType::Q3_K, DType::Q5_K}, Case{"llama", DType::Q2_K}}) {
    for (bool prefused : {false, true}) {
      SCOPED_TRACE(fmt::format("{} {}{}{}", c.arch, dtype_name(c.wtype), c.v_type ? " with v " : "",
                               prefused ? ", fused on the host first" : ""));
      DecoderWeights w = make_weights(c, 11);
      // As place_on leaves them on the CPU (mixed-type layers keep q/k/v apart) before a move to a device.
      if (prefused) w.fuse_projections();
      for (bool dequantize : {true, false}) {
        SCOPED_TRACE(dequantize ? "dequantized" : "GGUF types kept");
        expect_same(w.to_device(ctx, DType::BF16, dequantize),
                    testing::reference_to_device(w, ctx, DType::BF16, dequantize));
      }
    }
  }
}

// The host linear `want` (parts stacked by rows) exactly as placed grouped: codes, scales and zero points
// byte for byte, the first part's g_idx, the group size and the id.
void expect_grouped(const Linear& got, std::initializer_list<const Linear*> want, LinearId id) {
  SCOPED_TRACE(id.name());
  ASSERT_FALSE(got.dense());
  const Linear& first = **want.begin();
  auto stacked = [&](const Tensor& (*field)(const Linear&)) {
    int64_t rows = 0;
    for (const Linear* p : want) rows += field(*p).rows();
    Tensor out = Tensor::empty_host(field(first).dtype, {rows, field(first).cols()});
    char* dst = static_cast<char*>(out.data);
    for (const Linear* p : want) {
      std::memcpy(dst, field(*p).data, field(*p).nbytes());
      dst += field(*p).nbytes();
    }
    return out;
  };
  expect_same(got.weight, stacked([](const Linear& l) -> const Tensor& { return l.weight; }), "codes");
  expect_same(got.groups.scales, stacked([](const Linear& l) -> const Tensor& { return l.groups.scales; }), "scales");
  if (first.groups.zeros.empty())
    EXPECT_TRUE(got.groups.zeros.empty());
  else
    expect_same(got.groups.zeros, stacked([](const Linear& l) -> const Tensor& { return l.groups.zeros; }), "zeros");
  expect_same(got.groups.g_idx, first.groups.g_idx, "g_idx");
  EXPECT_EQ(got.groups.group_size, first.groups.group_size);
  EXPECT_EQ(got.id, id);
}

// Grouped integer linears: with `dequantize` they are decoded (any g_idx) and, decoded, q/k/v and gate/up
// stack even where act-order gave each its own input order; without, they keep their format (the device's
// matmul reads it) and stack only where their groups agree. Every linear keeps its id.
TEST(WeightPlacement, GroupedLinearsKeepTheirFormatOrAreDecoded) {
  const ops::Context ctx = backends::make_context(Device::Cpu);
  for (const Case& c : {Case{"qwen2", DType::U4}, Case{"llama", DType::U3, {}, false, true},
                        Case{"qwen3", DType::U2, {}, true, true}, Case{"llama", DType::U8}}) {
    SCOPED_TRACE(fmt::format("{} {}{}", c.arch, dtype_name(c.wtype), c.act_order ? " act-order" : ""));
    DecoderWeights w = make_weights(c, 15);
    EXPECT_FALSE(w.layers[0].wq.dense());
    for (bool prefused : {false, true}) {
      if (prefused) {
        w.fuse_projections();
        EXPECT_EQ(w.layers[0].wqkv.empty(), c.act_order) << "each linear has its own g_idx: kept apart";
      }
      {
        SCOPED_TRACE("dequantized");
        const log::Level level = log::level();
        log::set_level(log::Level::Info);
        ::testing::internal::CaptureStderr();
        const DecoderWeights d = w.to_device(ctx, DType::BF16, /*dequantize=*/true);
        const std::string log = ::testing::internal::GetCapturedStderr();
        log::set_level(level);
        // One line says so, whatever the number of linears.
        EXPECT_EQ(log.find("grouped integer formats"), log.rfind("grouped integer formats")) << log;
        EXPECT_NE(log.find(fmt::format("linear weights in grouped integer formats ({} g64) decoded to bf16",
                                       dtype_name(c.wtype))),
                  std::string::npos)
            << log;
        expect_same(d, testing::reference_to_device(w, ctx, DType::BF16, true));
        EXPECT_FALSE(d.layers[1].wqkv.empty());
        EXPECT_FALSE(d.layers[1].w_gate_up.empty());
        EXPECT_EQ(d.layers[1].wqkv.id, (LinearId{1, LinearRole::QKV}));
        EXPECT_EQ(d.layers[1].w_down.id, (LinearId{1, LinearRole::Down}));
        EXPECT_EQ(d.output.id, (LinearId{-1, LinearRole::Output}));
      }
      SCOPED_TRACE("kept grouped");
      const DecoderWeights d = w.to_device(ctx, DType::BF16, /*dequantize=*/false);
      EXPECT_EQ(d.tok_embd.dtype, DType::BF16);
      if (!c.tied) expect_grouped(d.output, {&w.output}, {-1, LinearRole::Output});
      for (int l = 0; l < 2; ++l) {
        const LayerWeights &L = w.layers[l], &D = d.layers[l];
        if (!L.wqkv.empty())
          expect_grouped(D.wqkv, {&L.wqkv}, {l, LinearRole::QKV});
        else if (c.act_order) {  // each its own g_idx: apart, in their own slots
          EXPECT_TRUE(D.wqkv.empty());
          expect_grouped(D.wq, {&L.wq}, {l, LinearRole::Q});
          expect_grouped(D.wk, {&L.wk}, {l, LinearRole::K});
          expect_grouped(D.wv, {&L.wv}, {l, LinearRole::V});
          EXPECT_EQ(D.bq.empty(), L.bq.empty());  // the biases follow their weights
        } else {
          expect_grouped(D.wqkv, {&L.wq, &L.wk, &L.wv}, {l, LinearRole::QKV});
          EXPECT_EQ(D.bqkv.empty(), L.bq.empty());
        }
        if (!L.w_gate_up.empty())
          expect_grouped(D.w_gate_up, {&L.w_gate_up}, {l, LinearRole::GateUp});
        else if (c.act_order) {
          expect_grouped(D.w_gate, {&L.w_gate}, {l, LinearRole::Gate});
          expect_grouped(D.w_up, {&L.w_up}, {l, LinearRole::Up});
        } else {
          expect_grouped(D.w_gate_up, {&L.w_gate, &L.w_up}, {l, LinearRole::GateUp});
        }
        expect_grouped(D.wo, {&L.wo}, {l, LinearRole::O});
        expect_grouped(D.w_down, {&L.w_down}, {l, LinearRole::Down});
      }
    }
  }
}

// --quantization fp8|int8 (DecoderWeights::quantize_w8a8): the blocks' float linears become W8A8, the
// embedding and the output projection stay, quantized linears are left alone; fusion stacks W8A8 parts (codes
// and channel scales) on the host and in placement, which keeps them W8A8 (or decodes them, dequantized).
TEST(WeightPlacement, W8A8LinearsQuantizeFuseAndKeepTheirFormat) {
  const ops::Context ctx = backends::make_context(Device::Cpu);
  for (DType t : {DType::I8, DType::F8E4M3}) {
    SCOPED_TRACE(dtype_name(t));
    DecoderWeights w = make_weights(Case{"qwen2", DType::BF16}, 21);
    EXPECT_EQ(w.quantize_w8a8(t, ctx.threads()), 2 * 7);
    EXPECT_TRUE(w.output.dense());
    EXPECT_EQ(w.tok_embd.dtype, DType::BF16);
    const LayerWeights& L = w.layers[1];
    ASSERT_TRUE(L.wq.scaled());
    EXPECT_EQ(L.wq.weight.dtype, t);
    EXPECT_EQ(L.w_down.id, (LinearId{1, LinearRole::Down}));
    const DecoderWeights placed = w.to_device(ctx, DType::BF16, /*dequantize=*/false);
    const LayerWeights& D = placed.layers[1];
    ASSERT_TRUE(D.wqkv.scaled());
    EXPECT_EQ(D.wqkv.out_features(), L.wq.out_features() + L.wk.out_features() + L.wv.out_features());
    EXPECT_EQ(D.wqkv.id, (LinearId{1, LinearRole::QKV}));
    // Stacked rows: each part's codes and scales where its rows land.
    const int64_t q_rows = L.wq.out_features(), k_rows = L.wk.out_features();
    EXPECT_EQ(std::memcmp(D.wqkv.weight.row(q_rows), L.wk.weight.row(0), L.wk.weight.nbytes()), 0);
    EXPECT_EQ(D.wqkv.channel_scales.ptr<float>()[q_rows + k_rows], L.wv.channel_scales.ptr<float>()[0]);
    ASSERT_TRUE(D.w_gate_up.scaled());
    EXPECT_EQ(D.w_gate_up.channel_scales.numel(), L.w_gate.out_features() + L.w_up.out_features());
    const DecoderWeights decoded = w.to_device(ctx, DType::BF16, /*dequantize=*/true);
    EXPECT_TRUE(decoded.layers[1].wqkv.dense());
    EXPECT_EQ(decoded.layers[1].wqkv.weight.dtype, DType::BF16);
    w.fuse_projections();
    ASSERT_TRUE(w.layers[0].w_gate_up.scaled());
    // Quantized linears stay: a Q8_0 model converts nothing.
    DecoderWeights q8 = make_weights(Case{"llama", DType::Q8_0}, 22);
    EXPECT_EQ(q8.quantize_w8a8(t, ctx.threads()), 0);
  }
}

// On the CPU, parts that lie back to back in the file (gate and up, mostly) are fused without a copy.
TEST(WeightPlacement, AdjacentPartsFuseAsAViewOnTheCpu) {
  DecoderWeights w = make_weights(Case{"llama", DType::Q8_0}, 14);
  LayerWeights& L = w.layers[0];
  const Tensor gate_up = testing::reference_stack({&L.w_gate.weight, &L.w_up.weight});
  L.w_gate = gate_up.slice_rows(0, L.w_gate.out_features());
  L.w_up = gate_up.slice_rows(L.w_gate.out_features(), L.w_up.out_features());
  w.fuse_projections();
  EXPECT_EQ(w.layers[0].w_gate_up.weight.data, gate_up.data);
  expect_same(w.layers[0].w_gate_up.weight, gate_up, "gate_up");
  EXPECT_EQ(w.layers[0].w_gate_up.id, (LinearId{0, LinearRole::GateUp}));
  EXPECT_NE(w.layers[1].w_gate_up.weight.data, nullptr);  // apart: copied
  EXPECT_TRUE(w.layers[1].w_gate.empty());
}

TEST(WeightPlacement, ProgressCountsEveryPlacedByte) {
  const ops::Context ctx = backends::make_context(Device::Cpu);
  const DecoderWeights w = make_weights(Case{"qwen2", DType::F16}, 12);
  int64_t last = 0, total = 0;
  const DecoderWeights d = w.to_device(ctx, DType::BF16, true, [&](int64_t done, int64_t all) {
    EXPECT_GT(done, last);
    last = done;
    total = all;
  });
  EXPECT_EQ(last, total);
  EXPECT_EQ(total, static_cast<int64_t>(d.nbytes()));
}

// Chunks far smaller than a tensor (and not a multiple of any row) split tensors across many staging
// buffers and put several pieces in one.
TEST(WeightUploader, StacksPartsAcrossSmallChunks) {
  const ops::Context ctx = backends::make_context(Device::Cpu);
  std::mt19937 rng(13);
  const Tensor a = random_weights(rng, {7, 256}, DType::F16), b = random_weights(rng, {3, 256}, DType::Q8_0),
               c = random_weights(rng, {5, 256}, DType::F32), v = random_weights(rng, {40}, DType::F32),
               u = random_weights(rng, {24}, DType::BF16);
  for (size_t chunk : {size_t{700}, size_t{1} << 20}) {
    SCOPED_TRACE(chunk);
    WeightUploader up(ctx, WeightUploader::Options{.chunk_bytes = chunk});
    const Tensor abc = up.add(DType::BF16, {&a, &b, &c}), vu = up.add(DType::F32, {&v, &u}),
                 single = up.add(DType::BF16, {&b});
    int64_t last = 0, calls = 0;
    up.run([&](int64_t done, int64_t total) {
      EXPECT_GT(done, last);
      EXPECT_EQ(total, static_cast<int64_t>(abc.nbytes() + vu.nbytes() + single.nbytes()));
      last = done;
      ++calls;
    });
    EXPECT_EQ(last, static_cast<int64_t>(abc.nbytes() + vu.nbytes() + single.nbytes()));
    EXPECT_EQ(calls > 1, chunk < 1000);
    const Tensor a16 = testing::reference_convert(a, DType::BF16), b16 = testing::reference_convert(b, DType::BF16),
                 c16 = testing::reference_convert(c, DType::BF16), u32 = testing::reference_convert(u, DType::F32);
    expect_same(abc, testing::reference_stack({&a16, &b16, &c16}), "abc");
    expect_same(vu, testing::reference_stack({&v, &u32}), "vu");
    expect_same(single, b16, "single");
  }
}

TEST(WeightUploader, RejectsPartsThatDoNotStack) {
  const ops::Context ctx = backends::make_context(Device::Cpu);
  const Tensor a = Tensor::empty_host(DType::F32, {2, 64}), b = Tensor::empty_host(DType::F32, {2, 32}),
               v = Tensor::empty_host(DType::F32, {64}), none;
  WeightUploader up(ctx);
  EXPECT_THROW(up.add(DType::BF16, {&a, &b}), Error);
  EXPECT_THROW(up.add(DType::BF16, {&a, &v}), Error);
  EXPECT_THROW(up.add(DType::BF16, {&none}), Error);
}

}  // namespace
}  // namespace kestrel
