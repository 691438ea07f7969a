// `kestrel bench`: prefill and decode speed, llama-bench style (pp = prompt tokens in one go from an
// empty cache, tg = tokens generated one at a time from an empty cache), mean and spread over repeats,
// with the weight bytes streamed per decoded token so the number can be held against memory bandwidth.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace kestrel::cli {
namespace {

struct BenchFlags {
  ModelFlags model;
  std::vector<int> prompt = {512};
  std::vector<int> gen = {128};
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

void bench(const BenchFlags& f) {
  auto model = load(f.model);
  const ModelConfig& c = model->config();
  const int max_p = f.prompt.empty() ? 0 : *std::max_element(f.prompt.begin(), f.prompt.end());
  const int max_g = f.gen.empty() ? 0 : *std::max_element(f.gen.begin(), f.gen.end());
  ModelFlags mf = f.model;
  mf.ctx_size = std::max({mf.ctx_size, max_p + 1, max_g + 1, 16});
  mf.batch_size = std::max(mf.batch_size, max_p);
  Session session(*model->decoder, make_context(mf), session_options(mf));
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
  for (int g : f.gen) {
    Row r{fmt::format("tg{}", g), {}};
    const auto toks = bench_tokens(g, c.vocab);
    for (int i = 0; i < f.repeats; ++i) {
      session.truncate(0);
      const double t0 = now_seconds();
      for (int j = 0; j < g; ++j) session.feed(std::span(&toks[j], 1));
      r.tok_s.push_back(g / (now_seconds() - t0));
    }
    rows.push_back(r);
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
    std::printf("| %s | %.1f MiB | %s | %d | %s | %.2f ± %.2f | %s |\n", c.name.empty() ? c.arch.c_str() : c.name.c_str(),
                weight_bytes / 1048576.0, f.model.device.c_str(), threads, r.test.c_str(), mean, sd,
                decode ? fmt::format("{:.1f}", gbs).c_str() : "-");
    out["results"].push_back({{"test", r.test}, {"tok_s_mean", mean}, {"tok_s_stddev", sd}, {"samples", r.tok_s}});
  }
  if (!f.json.empty()) {
    std::ofstream o(f.json);
    KS_CHECK(o.good(), "cannot write '{}'", f.json);
    o << out.dump(2) << "\n";
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* cmd = app.add_subcommand("bench", "measure prefill and decode speed (tok/s) like llama-bench");
  cmd->add_option("-p,--n-prompt", f->prompt, "prompt lengths to time (repeatable)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-n,--n-gen", f->gen, "generation lengths to time (repeatable)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("-r,--repetitions", f->repeats, "repeats per test")->check(CLI::Range(1, 1000));
  cmd->add_option("--json", f->json, "also write the results as JSON to this file");
  add_model_flags(*cmd, f->model);
  cmd->callback([f] { bench(*f); });
}

}  // namespace kestrel::cli
