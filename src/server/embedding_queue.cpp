#include "server/embedding_queue.h"

#include <algorithm>
#include <chrono>
#include <exception>

#include "core/log.h"

namespace kestrel::server {

EmbeddingQueue::EmbeddingQueue(Runner run, size_t max_batch_tokens, size_t max_waiting, BatchObserver observe)
    : run_(std::move(run)),
      observe_(std::move(observe)),
      max_batch_tokens_(std::max<size_t>(max_batch_tokens, 1)),
      // One request may always wait, as the scheduler always admits one into a free slot.
      max_waiting_(std::max<size_t>(max_waiting, 1)) {
  thread_ = std::thread([this] { work(); });
}

EmbeddingQueue::~EmbeddingQueue() {
  stop();
}

bool EmbeddingQueue::submit(std::shared_ptr<EmbeddingJob> job) {
  auto p = std::make_shared<Pending>();
  p->vectors.resize(job->inputs.size());
  {
    std::lock_guard lock(m_);
    if (stop_ || queue_.size() >= max_waiting_) return false;
    p->job = std::move(job);
    queue_.push_back(std::move(p));
  }
  cv_.notify_one();
  return true;
}

void EmbeddingQueue::wake() {
  cv_.notify_one();
}

void EmbeddingQueue::cancel_waiting() {
  fail_queued(503, "the request was cancelled because the server is shutting down");
}

void EmbeddingQueue::stop() {
  {
    std::lock_guard lock(m_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
  cancel_waiting();
}

void EmbeddingQueue::fail_queued(int status, const std::string& message) {
  std::deque<std::shared_ptr<Pending>> failed;
  {
    std::lock_guard lock(m_);
    failed.swap(queue_);
    // A job whose earlier inputs are in the running batch is in the queue too: it ends here, and work()
    // drops the batch's results for it.
    for (auto& p : failed) p->failed = true;
  }
  for (auto& p : failed) p->job->done(EmbeddingOutcome{status, message, {}});
}

std::vector<EmbeddingQueue::Piece> EmbeddingQueue::take_batch() {
  std::vector<Piece> batch;
  size_t tokens = 0;
  while (!queue_.empty()) {
    const std::shared_ptr<Pending>& p = queue_.front();
    const std::vector<EncoderInput>& in = p->job->inputs;
    Piece piece{p, p->next, p->next};
    // Whole inputs up to the budget; the first input of a batch goes in whatever its length.
    while (piece.end < in.size() && (tokens == 0 || tokens + in[piece.end].ids.size() <= max_batch_tokens_))
      tokens += in[piece.end++].ids.size();
    if (piece.end == piece.begin) break;  // the budget is spent
    p->next = piece.end;
    batch.push_back(std::move(piece));
    if (p->next < in.size()) break;  // the rest of this job goes in the next batch
    queue_.pop_front();
  }
  return batch;
}

void EmbeddingQueue::work() {
  for (;;) {
    std::vector<Piece> batch;
    std::vector<std::shared_ptr<Pending>> gone;  // jobs whose clients left
    {
      std::unique_lock lock(m_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      for (auto it = queue_.begin(); it != queue_.end();) {
        if ((*it)->job->cancelled) {
          gone.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      batch = take_batch();
    }
    for (auto& p : gone) p->job->done(EmbeddingOutcome{499, "the client closed the connection", {}});
    if (batch.empty()) continue;

    std::vector<EncoderInput> rows;
    size_t tokens = 0;
    for (const Piece& piece : batch)
      for (size_t i = piece.begin; i < piece.end; ++i) {
        rows.push_back(piece.p->job->inputs[i]);
        tokens += rows.back().ids.size();
      }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::vector<float>> out;
    std::string error;
    try {
      out = run_(rows);
      if (out.size() != rows.size()) error = "the encoder returned the wrong number of embeddings";
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (observe_)
      observe_(rows.size(), tokens, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!error.empty()) log::error("embedding batch of {} inputs failed: {}", rows.size(), error);

    size_t row = 0;
    for (const Piece& piece : batch) {
      Pending& p = *piece.p;
      const size_t n = piece.end - piece.begin;
      bool complete = false;
      {
        std::lock_guard lock(m_);
        if (!error.empty() && !p.failed) {
          p.failed = true;
          p.error = error;
          // Its inputs still queued will not run: the request has failed.
          queue_.erase(std::remove(queue_.begin(), queue_.end(), piece.p), queue_.end());
          complete = true;
        } else if (!p.failed) {
          std::move(out.begin() + static_cast<ptrdiff_t>(row), out.begin() + static_cast<ptrdiff_t>(row + n),
                    p.vectors.begin() + static_cast<ptrdiff_t>(piece.begin));
          complete = piece.end == p.job->inputs.size();
        }
      }
      row += n;
      if (!complete) continue;
      if (!p.error.empty())
        p.job->done(EmbeddingOutcome{500, "the encoder failed while embedding; see the server log", {}});
      else
        p.job->done(EmbeddingOutcome{200, {}, std::move(p.vectors)});
    }
  }
}

}  // namespace kestrel::server
