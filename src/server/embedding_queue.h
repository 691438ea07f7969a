// The server's embedding engine: one thread that runs the encoder over batches gathered from every waiting
// /v1/embeddings request. While a batch runs, new requests queue; when it ends, the thread takes the waiting
// inputs, oldest first, up to a token budget, and runs them as one forward (the encoder keeps the rows of a
// batch apart, so an input's embedding does not depend on its batch mates). A request larger than the budget
// is run over several batches, so the budget also bounds the activations' memory.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "tokenizer/encoder_inputs.h"

namespace kestrel::server {

// What a job ends with: its embeddings in input order (status 200), or an error status and message.
struct EmbeddingOutcome {
  int status = 200;
  std::string error;
  std::vector<std::vector<float>> vectors;
};

struct EmbeddingJob {
  std::vector<EncoderInput> inputs;
  // Runs once, on the queue's thread (or on the caller of cancel_waiting() / stop()); must not throw.
  std::function<void(EmbeddingOutcome&&)> done;
  std::atomic<bool> cancelled{false};  // set when the client leaves: its inputs not yet run are dropped
};

struct EmbeddingBatchStats {
  uint64_t batches = 0, inputs = 0, tokens = 0;
};

class EmbeddingQueue {
 public:
  // Runs a batch of rows to one embedding per row (EmbeddingModel::embed); it may throw.
  using Runner = std::function<std::vector<std::vector<float>>(std::span<const EncoderInput>)>;
  // Told of every batch run: its inputs, tokens and seconds (for the metrics).
  using BatchObserver = std::function<void(size_t inputs, size_t tokens, double seconds)>;

  // max_batch_tokens: the most tokens a batch gathers (an input longer than that runs alone);
  // max_waiting: requests queued at most (submit() refuses more).
  EmbeddingQueue(Runner run, size_t max_batch_tokens, size_t max_waiting, BatchObserver observe = {});
  ~EmbeddingQueue();  // stop()
  EmbeddingQueue(const EmbeddingQueue&) = delete;
  EmbeddingQueue& operator=(const EmbeddingQueue&) = delete;

  // Queues a job with at least one input; false (and the job untouched) when max_waiting are queued.
  bool submit(std::shared_ptr<EmbeddingJob> job);
  // Wakes the thread to drop cancelled jobs' inputs.
  void wake();
  // Ends every queued job with 503 (the server's drain is over); a batch already running finishes.
  void cancel_waiting();
  // Finishes the running batch, ends what is queued with 503 and joins the thread.
  void stop();

 private:
  struct Pending {
    std::shared_ptr<EmbeddingJob> job;
    size_t next = 0;  // inputs before this one are in a batch already
    std::vector<std::vector<float>> vectors;
    bool failed = false;  // ended already (a failed batch, or cancelled): later results are dropped
    std::string error;    // the failure of a batch that held its inputs
  };
  // A stretch of one job's inputs inside a batch.
  struct Piece {
    std::shared_ptr<Pending> p;
    size_t begin, end;
  };

  void work();
  std::vector<Piece> take_batch();  // under m_
  void fail_queued(int status, const std::string& message);

  Runner run_;
  BatchObserver observe_;
  size_t max_batch_tokens_, max_waiting_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Pending>> queue_;  // jobs with inputs not yet taken
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace kestrel::server
