// `kestrel bench`: prefill and decode speed, llama-bench style (pp = prompt tokens in one go from an
// empty cache, tg = tokens generated one at a time after -d context tokens, 0 by default), mean and spread
// over repeats, in the run's KV cache format (--kv-type),
// with the weight bytes streamed per decoded token so the number can be held against memory bandwidth.
// On CUDA it also runs batched decode (B independent sequences stepping together through the executor, the
// same step path the server uses: decode graphs, GPU greedy sampling), measures the device-to-device copy
// ceiling in the same run and splits step time into GEMM and attention shares (ops::Context::profile_only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "cli/common.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "engine/executor.h"

namespace kestrel::cli {
namespace {

struct BenchFlags {
  ModelFlags model;
  std::vector<int> prompt = {512};
  std::vector<int> gen = {128};
  std::vector<int> batches = {1};  // decode batch sizes (CUDA)
  std::vector<int> depths = {0};   // context tokens already cached when a tg test starts
  bool random_depth = false;       // fill -d contexts with random K/V instead of prefilling them
  std::vector<int> mixed;          // prompt tokens of a mixed step (CUDA): B decode rows + prompt chunks
  int mixed_chunk = 256;           // the server's --prefill-chunk: a mixed step's prompts are this long
  int repeats = 3;
  std::string json;
};

struct Row {
  std::string test;
  std::vector<double> tok_s;
};

std::vector<int32_t> bench_tokens(int n, int vocab) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7919 + 13) % vocab);
  return t;
}

void write_json(const std::string& path, const nlohmann::json& out) {
  if (path.empty()) return;
  std::ofstream o(path);
  KS_CHECK(o.good(), "cannot write '{}'", path);
  o << out.dump(2) << "\n";
}

double mean_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

// Device milliseconds of what `body` enqueues on the context's lane (it may wait for its own work).
double gpu_ms(const ops::Context& ctx, const std::function<void()>& body) {
  auto a = ctx.lane().record(true);
  body();
  auto b = ctx.lane().record(true);
  b->wait();
  return b->ms_since(*a);
}

ExecutorOptions executor_options(int tokens, int seqs, int kv_len, bool graphs) {
  ExecutorOptions o;
  o.max_step_tokens = tokens;
  o.max_seqs = seqs;
  o.max_kv_len = kv_len;
  o.graphs = graphs;
  return o;
}

// Prefill of p tokens from an empty cache through the executor: wall-clock TTFT (staging, forward, the
// first token sampled on the device) and the GPU time of the same step with only attention, and only the
// matmuls, running.
nlohmann::json bench_prefill_gpu(Decoder& dec, const ops::Context& ctx, const KvFormat& kv, int p, int repeats) {
  const ModelConfig& c = dec.config();
  KvCacheConfig kc{c.n_layers, c.n_kv_heads, c.head_dim, 16, (p + 15) / 16, kv};
  KvCache cache(kc, ctx);
  SequenceKv seq;
  KS_CHECK(seq.reserve(cache, p), "KV cache too small");
  const auto toks = bench_tokens(p, c.vocab);
  const SamplingParams greedy;
  StepSeq s;
  s.kv = &seq;
  s.tokens = toks;
  s.prompt = true;
  s.sampling = &greedy;
  auto step = [&](Executor& ex) {
    seq.set_length(cache, 0);
    ex.run(std::span(&s, 1));
  };
  Executor ex(dec, cache, ctx, executor_options(p, 1, p, false));
  step(ex);  // warm-up: GEMM plans, scratch
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const double t0 = now_seconds();
    step(ex);
    ms.push_back((now_seconds() - t0) * 1e3);
  }
  auto only = [&](const char* op) {
    ops::Context pc = ctx;
    pc.profile_only = op;
    Executor pe(dec, cache, pc, executor_options(p, 1, p, false));
    step(pe);
    return gpu_ms(ctx, [&] { step(pe); });
  };
  const double ttft = *std::min_element(ms.begin(), ms.end());
  const double attn = only("attention"), gemm = only("matmul");
  // Matmul FLOPs: every linear weight (bf16, 2 bytes) once per token; the embedding is a gather unless tied.
  const DecoderWeights& wt = dec.weights();
  const double gathered = !wt.tied() ? static_cast<double>(wt.tok_embd.nbytes()) : 0.0;
  const double flops = 2.0 * (static_cast<double>(wt.nbytes()) - gathered) / 2 * p;
  return {{"test", fmt::format("pp{}", p)},
          {"batch", 1},
          {"tok_s", p / (ttft * 1e-3)},
          {"ttft_ms", ttft},
          {"ttft_ms_samples", ms},
          {"attention_ms", attn},
          {"gemm_ms", gemm},
          {"gemm_tflops", flops / (gemm * 1e-3) / 1e12}};
}

// The prompt chunk a depth's context is prefilled in.
constexpr int kDepthChunk = 4096;

// Prefills d context tokens into each sequence, in prompt chunks of kDepthChunk (untimed set-up).
void prefill_context(Decoder& dec, KvCache& cache, const ops::Context& ctx, std::span<SequenceKv> seqs, int d,
                     int len) {
  if (d <= 0) return;
  const auto context = bench_tokens(d, dec.config().vocab);
  Executor pre(dec, cache, ctx, executor_options(std::min(d, kDepthChunk), 1, len, false));
  for (auto& sq : seqs)
    for (int i = 0; i < d; i += kDepthChunk) {
      StepSeq s;
      s.kv = &sq;
      s.tokens = std::span(context).subspan(i, std::min(kDepthChunk, d - i));
      s.prompt = true;
      pre.run(std::span(&s, 1));
    }
}

// Gives each sequence d cached positions of random keys and values (N(0, 1), written through the cache's
// format by ops::kv_write, every layer the same) instead of prefilling them: a context of a million
// tokens then takes seconds instead of the half hour its causal prefill would. Decode speed and memory do
// not depend on what the keys are; the tokens decoded after it mean nothing.
void fill_random_context(KvCache& cache, const ops::Context& ctx, std::vector<SequenceKv>& seqs, int d) {
  const KvCacheConfig& kc = cache.config();
  const int64_t row = static_cast<int64_t>(kc.n_kv_heads) * kc.head_dim;
  const int chunk = std::min(d, kDepthChunk);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  Tensor kv_host = Tensor::empty_host(DType::BF16, {chunk, kc.n_kv_heads, kc.head_dim});
  for (int64_t i = 0; i < chunk * row; ++i) kv_host.ptr<uint16_t>()[i] = f32_to_bf16(normal(rng));
  const Tensor kv_dev = ctx.lane().upload(kv_host);
  Tensor slots = Tensor::empty_host(DType::I32, {chunk});
  for (auto& sq : seqs) {
    for (int i = 0; i < d; i += chunk) {
      const int n = std::min(chunk, d - i);
      for (int j = 0; j < n; ++j) slots.ptr<int32_t>()[j] = sq.slot(cache, i + j);
      const Tensor slots_dev = ctx.lane().upload(n == chunk ? slots : slots.slice_rows(0, n));
      const Tensor kv_rows = n == chunk ? kv_dev : kv_dev.slice_rows(0, n);
      for (ops::KvLayer& layer : cache.layers()) ops::kv_write(ctx, kv_rows, kv_rows, slots_dev, layer);
    }
    sq.set_length(cache, d);
  }
  ctx.lane().synchronize();
}

// B sequences decode g tokens each after d context tokens (prefilled once, untimed), stepping together
// through the executor (decode graphs, GPU greedy sampling feeding the next tokens: the server's step
// path, host planning included).
nlohmann::json bench_decode_gpu(Decoder& dec, const ops::Context& ctx, const KvFormat& kv, int B, int g, int d,
                                bool random_depth, int repeats, double copy_gbps) {
  const ModelConfig& c = dec.config();
  const int len = d + g + 1;
  const int per_seq = (len + 15) / 16;
  KvCacheConfig kc{c.n_layers, c.n_kv_heads, c.head_dim, 16, B * per_seq + 2, kv};
  KvCache cache(kc, ctx);
  std::vector<SequenceKv> seqs(B);
  for (auto& s : seqs) KS_CHECK(s.reserve(cache, len), "KV cache too small");
  if (random_depth)
    fill_random_context(cache, ctx, seqs, d);
  else
    prefill_context(dec, cache, ctx, seqs, d, len);
  Executor ex(dec, cache, ctx, executor_options(B, B, len, true));
  ex.capture_graphs();
  const SamplingParams greedy;
  std::vector<int32_t> tok(B);
  std::vector<StepSeq> work(B);
  auto pass = [&](int steps, bool sample, Executor& e, double* step_gpu_ms) {
    for (int b = 0; b < B; ++b) {
      seqs[b].set_length(cache, d);
      tok[b] = static_cast<int32_t>((b * 7919 + 13) % c.vocab);
    }
    for (int j = 0; j < steps; ++j) {
      for (int b = 0; b < B; ++b) {
        work[b] = StepSeq{};
        work[b].kv = &seqs[b];
        work[b].tokens = std::span(&tok[b], 1);
        work[b].sampling = &greedy;
      }
      StepResult r;
      const double ms = gpu_ms(ctx, [&] { r = e.run(work); });
      if (step_gpu_ms) *step_gpu_ms += ms;
      if (sample)
        for (int b = 0; b < B; ++b) tok[b] = r.seqs[b].token;
    }
  };
  pass(std::min(g, 8), true, ex, nullptr);  // warm-up
  std::vector<double> tok_s;
  double gpu_full = 0;
  for (int i = 0; i < repeats; ++i) {
    const double t0 = now_seconds();
    pass(g, true, ex, i == 0 ? &gpu_full : nullptr);
    tok_s.push_back(static_cast<double>(B) * g / (now_seconds() - t0));
  }
  // The same steps with only the matmuls running: the GEMM share of the step's GPU time.
  ops::Context mm = ctx;
  mm.profile_only = "matmul";
  Executor gemm_ex(dec, cache, mm, executor_options(B, B, len, true));
  double gpu_gemm = 0;
  pass(g, false, gemm_ex, &gpu_gemm);

  const double tps = mean_of(tok_s), step_s = B / tps;
  // Bytes a step streams: the weights and the cache at its mean length, in the format's bytes.
  const double kv_token = static_cast<double>(c.n_layers) * kv.bytes_per_token_layer(c.n_kv_heads, c.head_dim);
  const double bytes = static_cast<double>(dec.weights().nbytes()) + B * kv_token * (d + (g + 1) / 2.0);
  const double gbs = bytes / step_s / 1e9;
  return {{"test", d > 0 ? fmt::format("tg{} @ d{}{}", g, d, random_depth ? " (random)" : "") : fmt::format("tg{}", g)},
          {"depth", d},
          {"random_depth", random_depth && d > 0},
          {"batch", B},
          {"tok_s", tps},
          {"tok_s_samples", tok_s},
          {"step_ms", step_s * 1e3},
          {"gpu_step_ms", gpu_full / g},
          {"gemm_step_ms", gpu_gemm / g},
          {"gemm_share", gpu_gemm / gpu_full},
          {"gb_s", gbs},
          {"pct_of_copy", 100 * gbs / copy_gbps}};
}

// One mixed step as the server runs it under load: B decode rows (contexts of d tokens) and p prompt tokens
// in chunks of `chunk` tokens from separate prompts, every row sampling greedily on the device. Times the
// mixed step and, on the same cache, its two halves alone (the decode rows eagerly as in the mixed step and
// from their graph, the prompt chunks alone), plus the mixed step's GPU time with only the matmuls and only
// attention running: where a mixed step's time goes that prefill and decode rates do not explain.
nlohmann::json bench_mixed_gpu(Decoder& dec, const ops::Context& ctx, const KvFormat& kv, int B, int p, int chunk,
                               int d, int repeats) {
  const ModelConfig& c = dec.config();
  const int n_prompts = (p + chunk - 1) / chunk;
  const int len = std::max(d + 2, chunk);
  const int per_seq = (len + 15) / 16;
  KvCacheConfig kc{c.n_layers, c.n_kv_heads, c.head_dim, 16, (B + n_prompts) * per_seq + 2, kv};
  KvCache cache(kc, ctx);
  std::vector<SequenceKv> seqs(B + n_prompts);
  for (auto& s : seqs) KS_CHECK(s.reserve(cache, len), "KV cache too small");
  const auto context = bench_tokens(chunk, c.vocab);
  prefill_context(dec, cache, ctx, std::span(seqs).first(B), d, len);
  const SamplingParams greedy;
  std::vector<int32_t> tok(B);
  for (int b = 0; b < B; ++b) tok[b] = static_cast<int32_t>((b * 7919 + 13) % c.vocab);
  // The step's rows: decode rows first (if any), then the prompt chunks (if any).
  auto rows = [&](bool decode, bool prompts) {
    std::vector<StepSeq> work;
    for (int b = 0; decode && b < B; ++b) {
      seqs[b].set_length(cache, d);
      StepSeq s;
      s.kv = &seqs[b];
      s.tokens = std::span(&tok[b], 1);
      s.sampling = &greedy;
      work.push_back(s);
    }
    for (int i = 0; prompts && i < n_prompts; ++i) {
      SequenceKv& sq = seqs[B + i];
      sq.set_length(cache, 0);
      StepSeq s;
      s.kv = &sq;
      s.tokens = std::span(context).first(std::min(chunk, p - i * chunk));
      s.prompt = true;
      s.sampling = &greedy;
      work.push_back(s);
    }
    return work;
  };
  const int tokens = B + p;
  // Median GPU ms of `repeats` runs of a step (one untimed warm-up first).
  auto time_step = [&](Executor& ex, const ops::Context& tc, bool decode, bool prompts) {
    ex.run(rows(decode, prompts));
    std::vector<double> ms;
    for (int i = 0; i < std::max(repeats, 3); ++i) {
      const auto work = rows(decode, prompts);
      ms.push_back(gpu_ms(tc, [&] { ex.run(work); }));
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  Executor ex(dec, cache, ctx, executor_options(tokens, B + n_prompts, len, true));
  const double mixed = time_step(ex, ctx, true, true);
  const double prefill = time_step(ex, ctx, false, true);
  const double decode_graph = time_step(ex, ctx, true, false);
  Executor eager(dec, cache, ctx, executor_options(tokens, B + n_prompts, len, false));
  const double decode_eager = time_step(eager, ctx, true, false);
  auto only = [&](const char* op) {
    ops::Context pc = ctx;
    pc.profile_only = op;
    Executor pe(dec, cache, pc, executor_options(tokens, B + n_prompts, len, false));
    return time_step(pe, ctx, true, true);
  };
  const double gemm = only("matmul"), attn = only("attention");
  return {{"test", fmt::format("mixed p{}+B{} @ d{}", p, B, d)},
          {"batch", B},
          {"prompt_tokens", p},
          {"chunk", chunk},
          {"depth", d},
          {"mixed_ms", mixed},
          {"prefill_only_ms", prefill},
          {"decode_graph_ms", decode_graph},
          {"decode_eager_ms", decode_eager},
          {"mixed_gemm_ms", gemm},
          {"mixed_attention_ms", attn},
          {"tok_s", tokens / (mixed * 1e-3)}};
}

void bench_gpu(const BenchFlags& f) {
  const double t_load = now_seconds();
  auto model = load(f.model);
  const ops::Context ctx = make_context(f.model);
  const KvFormat kv = session_options(f.model, *model).kv_format;
  Decoder& dec = *model->decoder;
  dec.place_on(ctx);
  const double load_s = now_seconds() - t_load;
  const double copy_gbps = ctx.lane().copy_bandwidth_gbps(size_t{1} << 30, 10);
  // What a decode step streams: every weight but the embedding table, of which it gathers one row per
  // token (unless the output projection is the same tensor). By type, for the header line.
  const DecoderWeights& w = dec.weights();
  const bool tied = w.tied();
  const double weight_bytes = static_cast<double>(w.nbytes() - (tied ? 0 : w.tok_embd.nbytes()));
  std::map<std::string, double> by_type;
  w.for_each_tensor(
      [&](const Tensor& t) { by_type[std::string(dtype_name(t.dtype))] += static_cast<double>(t.nbytes()); });
  std::string types;
  for (const auto& [name, bytes] : by_type)
    types += fmt::format("{}{} {:.2f}", types.empty() ? "" : ", ", name, bytes / 1e9);
  nlohmann::json out = {{"model", model->path},
                        {"backend", "cuda"},
                        {"device", ctx.lane().description()},
                        {"date", today()},
                        {"weight_bytes", weight_bytes},
                        {"load_seconds", load_s},
                        {"copy_gbps", copy_gbps},
                        {"kv_type", kv.name},
                        {"roofline_tok_s_batch1", copy_gbps * 1e9 / weight_bytes},
                        {"results", nlohmann::json::array()}};
  out["weight_bytes_by_type"] = by_type;
  std::printf(
      "device: %s; weights on the device %.2f GB (%s), %.2f GB streamed per decode step; copy ceiling "
      "(cudaMemcpy D2D, read+write) %.0f GB/s => batch-1 roofline %.1f tok/s; load + place %.1f s; KV cache %s\n",
      out["device"].get<std::string>().c_str(), static_cast<double>(w.nbytes()) / 1e9, types.c_str(),
      weight_bytes / 1e9, copy_gbps, copy_gbps * 1e9 / weight_bytes, load_s, kv.name.c_str());
  std::printf(
      "| test | batch | tok/s | TTFT / step ms | GB/s | %% of copy | GEMM share | attention ms |\n"
      "|---|---|---|---|---|---|---|---|\n");
  for (int p : f.prompt) {
    nlohmann::json r = bench_prefill_gpu(dec, ctx, kv, p, f.repeats);
    std::printf("| pp%d | 1 | %.0f | %.2f | - | - | %.0f%% | %.3f |\n", p, r["tok_s"].get<double>(),
                r["ttft_ms"].get<double>(), 100 * r["gemm_ms"].get<double>() / r["ttft_ms"].get<double>(),
                r["attention_ms"].get<double>());
    std::fflush(stdout);
    out["results"].push_back(r);
  }
  for (int d : f.depths)
    for (int g : f.gen)
      for (int B : f.batches) {
        nlohmann::json r = bench_decode_gpu(dec, ctx, kv, B, g, d, f.random_depth, f.repeats, copy_gbps);
        std::printf("| %s | %d | %.1f | %.3f | %.0f | %.1f%% | %.0f%% | - |\n", r["test"].get<std::string>().c_str(), B,
                    r["tok_s"].get<double>(), r["step_ms"].get<double>(), r["gb_s"].get<double>(),
                    r["pct_of_copy"].get<double>(), 100 * r["gemm_share"].get<double>());
        std::fflush(stdout);
        out["results"].push_back(r);
      }
  if (!f.mixed.empty())
    std::printf(
        "\n| mixed step | ms | tok/s | prompts alone ms | decode rows alone ms (eager / graph) | matmuls only ms | "
        "attention only ms |\n|---|---|---|---|---|---|---|\n");
  for (int p : f.mixed)
    for (int d : f.depths)
      for (int B : f.batches) {
        nlohmann::json r = bench_mixed_gpu(dec, ctx, kv, B, p, f.mixed_chunk, d, f.repeats);
        std::printf("| %s | %.3f | %.0f | %.3f | %.3f / %.3f | %.3f | %.3f |\n", r["test"].get<std::string>().c_str(),
                    r["mixed_ms"].get<double>(), r["tok_s"].get<double>(), r["prefill_only_ms"].get<double>(),
                    r["decode_eager_ms"].get<double>(), r["decode_graph_ms"].get<double>(),
                    r["mixed_gemm_ms"].get<double>(), r["mixed_attention_ms"].get<double>());
        std::fflush(stdout);
        out["results"].push_back(r);
      }
  write_json(f.json, out);
}

void bench(const BenchFlags& f) {
  KS_CHECK(f.model.device == "cuda" || (f.mixed.empty() && !f.random_depth),
           "--mixed and --random-depth time the CUDA step path: add --device cuda");
  if (f.model.device == "cuda") {
    make_context(f.model);  // reports a build or machine without CUDA before the model loads
    return bench_gpu(f);
  }
  auto model = load(f.model);
  const ModelConfig& c = model->config();
  const int max_p = f.prompt.empty() ? 0 : *std::max_element(f.prompt.begin(), f.prompt.end());
  const int max_g = f.gen.empty() ? 0 : *std::max_element(f.gen.begin(), f.gen.end());
  const int max_d = *std::max_element(f.depths.begin(), f.depths.end());
  ModelFlags mf = f.model;
  mf.ctx_size = std::max({mf.ctx_size, max_p + 1, max_d + max_g + 1, 16});
  mf.batch_size = std::max(mf.batch_size, max_p);
  Session session(*model->decoder, make_context(mf), session_options(mf, *model));
  std::vector<Row> rows;
  // One untimed warm-up pass pages the weights in and settles the thread pool.
  session.feed(bench_tokens(std::min(max_p > 0 ? max_p : 16, 64), c.vocab));
  session.truncate(0);
  for (int p : f.prompt) {
    Row r{fmt::format("pp{}", p), {}};
    const auto toks = bench_tokens(p, c.vocab);
    for (int i = 0; i < f.repeats; ++i) {
      session.truncate(0);
      const double t0 = now_seconds();
      session.feed(toks);
      r.tok_s.push_back(p / (now_seconds() - t0));
    }
    rows.push_back(r);
  }
  for (int d : f.depths) {
    session.truncate(0);
    if (d > 0) session.feed(bench_tokens(d, c.vocab));  // the context, once per depth
    for (int g : f.gen) {
      Row r{d > 0 ? fmt::format("tg{} @ d{}", g, d) : fmt::format("tg{}", g), {}};
      const auto toks = bench_tokens(g, c.vocab);
      for (int i = 0; i < f.repeats; ++i) {
        session.truncate(d);
        const double t0 = now_seconds();
        for (int j = 0; j < g; ++j) session.feed(std::span(&toks[j], 1));
        r.tok_s.push_back(g / (now_seconds() - t0));
      }
      rows.push_back(r);
    }
  }
  session.truncate(0);

  const double weight_bytes = static_cast<double>(model->decoder->weights().nbytes());
  const int threads = ThreadPool::global().size();
  std::printf("| model | size | backend | threads | test | t/s | weight GB/s |\n|---|---|---|---|---|---|---|\n");
  nlohmann::json out = {{"model", model->path},
                        {"weight_bytes", weight_bytes},
                        {"backend", f.model.device},
                        {"threads", threads},
                        {"results", nlohmann::json::array()}};
  for (const Row& r : rows) {
    const double mean = std::accumulate(r.tok_s.begin(), r.tok_s.end(), 0.0) / r.tok_s.size();
    double sq = 0;
    for (double v : r.tok_s) sq += (v - mean) * (v - mean);
    const double sd = r.tok_s.size() > 1 ? std::sqrt(sq / (r.tok_s.size() - 1)) : 0;
    // Decode streams every weight once per token; prefill amortises them over the batch.
    const bool decode = r.test.rfind("tg", 0) == 0;
    const double gbs = decode ? mean * weight_bytes / 1e9 : 0;
    std::printf("| %s | %.1f MiB | %s | %d | %s | %.2f ± %.2f | %s |\n",
                c.name.empty() ? c.arch.c_str() : c.name.c_str(), weight_bytes / 1048576.0, f.model.device.c_str(),
                threads, r.test.c_str(), mean, sd, decode ? fmt::format("{:.1f}", gbs).c_str() : "-");
    out["results"].push_back({{"test", r.test}, {"tok_s_mean", mean}, {"tok_s_stddev", sd}, {"samples", r.tok_s}});
  }
  write_json(f.json, out);
}

}  // namespace

void register_bench(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prefill and decode speed (tok/s) like llama-bench");
  cmd->add_option("-p,--n-prompt", f->prompt, "prompt lengths to time (repeatable)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-n,--n-gen", f->gen, "generation lengths to time (repeatable)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-d,--n-depth", f->depths,
                  "context tokens cached before each generation test (llama-bench's -d; repeatable): decode speed "
                  "at that context length, in the --kv-type format")
      ->check(CLI::Range(0, 1 << 22));
  cmd->add_option("-B,--batch", f->batches, "decode batch sizes, B sequences stepping together (CUDA; repeatable)")
      ->check(CLI::Range(1, 128));
  cmd->add_flag("--random-depth", f->random_depth,
                "CUDA: fill the -d contexts with random keys and values written through the --kv-type format instead "
                "of prefilling them (seconds instead of the causal prefill's minutes at 1M tokens; same decode speed, "
                "meaningless tokens)");
  cmd->add_option("--mixed", f->mixed,
                  "CUDA: also time mixed steps as the server runs them under load, each -B decode rows (at each -d "
                  "context) plus this many prompt tokens (repeatable), against their halves run alone")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--mixed-chunk", f->mixed_chunk,
                  "prompt tokens per prompt in a --mixed step (the server's --prefill-chunk)")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("-r,--repetitions", f->repeats, "repeats per test")->check(CLI::Range(1, 1000));
  cmd->add_option("--json", f->json, "also write the results as JSON to this file");
  add_model_flags(*cmd, f->model);
  cmd->callback([f] { bench(*f); });
}

}  // namespace kestrel::cli
