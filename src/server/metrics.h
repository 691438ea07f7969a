// Server metrics in the Prometheus text format (version 0.0.4): request counts by status, token
// counters, latency histograms (time to first token, time per output token, end to end) and the
// scheduler's gauges; the embedding queue's requests, inputs, tokens and batch sizes. Thread-safe: the I/O and engine
// threads both record.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/scheduler.h"

namespace kestrel::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  // Appends the _bucket, _sum and _count lines for `name`.
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  // Every answer, the server's own rejections included; an error (status >= 400) is also counted
  // under its reason (the error's code, e.g. invalid_value, body_too_large, engine_error).
  void request_finished(int status, std::string_view reason = {});
  void tokens(int prompt, int generated);
  void time_to_first_token(double seconds);
  void time_per_output_token(double seconds);
  void request_latency(double seconds);
  // An answered /v1/embeddings request (status 200): its inputs and tokens.
  void embedding_request(size_t inputs, size_t tokens);
  // A batch the embedding queue ran: inputs, tokens and seconds.
  void embedding_batch(size_t inputs, size_t tokens, double seconds);
  // The whole page; scheduler gauges come from `sched`, open connections from `connections`.
  std::string render(const SchedulerStats& sched, int connections) const;

 private:
  mutable std::mutex mutex_;
  std::map<int, uint64_t> requests_by_status_;
  std::map<std::pair<int, std::string>, uint64_t> errors_;
  uint64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, tpot_, latency_;
  uint64_t embedding_requests_ = 0, embedding_inputs_ = 0, embedding_tokens_ = 0;
  uint64_t embedding_batches_ = 0;
  double embedding_seconds_ = 0;
  Histogram embedding_batch_inputs_, embedding_batch_tokens_;
};

}  // namespace kestrel::server
