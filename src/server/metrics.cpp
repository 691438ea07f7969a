#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace kestrel::server {
namespace {

void metric_header(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

template <typename T>
void single(std::string& out, const std::string& name, const char* type, const std::string& help, T value) {
  metric_header(out, name, type, help);
  out += fmt::format("{} {}\n", name, value);
}

}  // namespace

void Histogram::observe(double v) {
  const size_t b = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  ++counts_[b];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  metric_header(out, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name, sum_, name, count_);
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
      tpot_({0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5}),
      latency_({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120, 300}),
      embedding_batch_inputs_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048}),
      embedding_batch_tokens_({16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536}) {}

void Metrics::embedding_request(size_t inputs, size_t tokens) {
  std::lock_guard lock(mutex_);
  ++embedding_requests_;
  embedding_inputs_ += inputs;
  embedding_tokens_ += tokens;
}

void Metrics::embedding_batch(size_t inputs, size_t tokens, double seconds) {
  std::lock_guard lock(mutex_);
  ++embedding_batches_;
  embedding_seconds_ += seconds;
  embedding_batch_inputs_.observe(static_cast<double>(inputs));
  embedding_batch_tokens_.observe(static_cast<double>(tokens));
}

void Metrics::request_finished(int status, std::string_view reason) {
  std::lock_guard lock(mutex_);
  ++requests_by_status_[status];
  if (status >= 400) ++errors_[{status, std::string(reason.empty() ? "other" : reason)}];
}

void Metrics::tokens(int prompt, int generated) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  generation_tokens_ += static_cast<uint64_t>(generated);
}

void Metrics::time_to_first_token(double s) {
  std::lock_guard lock(mutex_);
  ttft_.observe(s);
}

void Metrics::time_per_output_token(double s) {
  std::lock_guard lock(mutex_);
  tpot_.observe(s);
}

void Metrics::request_latency(double s) {
  std::lock_guard lock(mutex_);
  latency_.observe(s);
}

std::string Metrics::render(const SchedulerStats& st, int connections) const {
  std::string out;
  std::lock_guard lock(mutex_);
  metric_header(out, "kestrel_requests_total", "counter", "HTTP requests answered, by status code (499: client gone)");
  for (const auto& [status, n] : requests_by_status_)
    out += fmt::format("kestrel_requests_total{{status=\"{}\"}} {}\n", status, n);
  metric_header(out, "kestrel_request_errors_total", "counter",
                "answers with an error status (499: client gone), by status and reason");
  for (const auto& [key, n] : errors_)
    out += fmt::format("kestrel_request_errors_total{{status=\"{}\",reason=\"{}\"}} {}\n", key.first, key.second, n);
  single(out, "kestrel_prompt_tokens_total", "counter", "prompt tokens of finished requests", prompt_tokens_);
  single(out, "kestrel_generation_tokens_total", "counter", "tokens generated for finished requests",
         generation_tokens_);
  ttft_.render(out, "kestrel_time_to_first_token_seconds", "time from request arrival to its first token");
  tpot_.render(out, "kestrel_time_per_output_token_seconds", "mean time between output tokens, per request");
  latency_.render(out, "kestrel_e2e_request_latency_seconds", "time from request arrival to its last token");
  single(out, "kestrel_num_requests_waiting", "gauge", "requests queued for admission", st.waiting);
  single(out, "kestrel_num_requests_running", "gauge", "sequences in the running batch", st.running);
  single(out, "kestrel_kv_blocks_total", "gauge", "KV cache blocks", st.kv_blocks_total);
  single(out, "kestrel_kv_blocks_free", "gauge", "KV cache blocks in the free list", st.kv_blocks_free);
  single(out, "kestrel_kv_blocks_cached", "gauge", "KV blocks held only by the prefix cache (reclaimable)",
         st.kv_blocks_cached);
  single(out, "kestrel_kv_blocks_used", "gauge", "KV blocks held by sequences", st.kv_blocks_in_use);
  single(out, "kestrel_preemptions_total", "counter", "sequences preempted for lack of KV blocks", st.preemptions);
  single(out, "kestrel_prefix_cache_hit_tokens_total", "counter", "prompt tokens served from the prefix cache",
         st.prefix_cache_hit_tokens);
  single(out, "kestrel_prompt_tokens_computed_total", "counter", "prompt tokens run through the model",
         st.prompt_tokens_computed);
  single(out, "kestrel_engine_steps_total", "counter", "engine steps (forward passes)", st.steps);
  single(out, "kestrel_engine_wait_seconds_total", "counter", "engine thread time waiting for step results",
         st.wait_seconds);
  single(out, "kestrel_engine_host_seconds_total", "counter",
         "engine thread time on everything else while working (results, events, planning, launching)", st.host_seconds);
  // Step time by kind: mean step time = seconds / steps, mean batch = rows / steps (compare `kestrel bench`).
  for (const auto& [kind, t] : {std::pair{"decode", &st.decode}, std::pair{"mixed", &st.mixed}}) {
    const std::string k = kind;
    single(out, "kestrel_" + k + "_steps_total", "counter",
           k == "decode" ? "steps of decode rows only" : "steps with prefill chunks", t->steps);
    single(out, "kestrel_" + k + "_step_rows_total", "counter", "sequences those steps carried", t->rows);
    single(out, "kestrel_" + k + "_step_seconds_total", "counter", "engine time those steps took", t->seconds);
    single(out, "kestrel_" + k + "_step_device_seconds_total", "counter", "device time of those steps' work",
           t->device_seconds);
  }
  single(out, "kestrel_embedding_requests_total", "counter", "/v1/embeddings requests answered with embeddings",
         embedding_requests_);
  single(out, "kestrel_embedding_inputs_total", "counter", "inputs (texts or token lists) of those requests",
         embedding_inputs_);
  single(out, "kestrel_embedding_tokens_total", "counter", "tokens of those inputs (usage.prompt_tokens)",
         embedding_tokens_);
  single(out, "kestrel_embedding_batches_total", "counter", "encoder forward passes of the embedding queue",
         embedding_batches_);
  single(out, "kestrel_embedding_batch_seconds_total", "counter", "time those passes took", embedding_seconds_);
  embedding_batch_inputs_.render(out, "kestrel_embedding_batch_inputs", "inputs per embedding batch");
  embedding_batch_tokens_.render(out, "kestrel_embedding_batch_tokens", "tokens per embedding batch");
  single(out, "kestrel_http_connections", "gauge", "open HTTP connections", connections);
  return out;
}

}  // namespace kestrel::server
