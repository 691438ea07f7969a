// The embedding queue: requests waiting while a batch runs are gathered into one batch up to the token
// budget, a request over the budget runs over several batches, and each request gets its own rows back in
// order; failures and cancellations end the request, never the queue.
#include "server/embedding_queue.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <stdexcept>

namespace kestrel::server {
namespace {

using namespace std::chrono_literals;

EncoderInput row(int32_t id, size_t len) {
  return {std::vector<int32_t>(len, id), std::vector<int32_t>(len, 0), std::vector<int32_t>(len, 1)};
}

// A runner that embeds a row as {first id, length} and records each batch's row count; the first batch
// waits for `gate`, so what is submitted meanwhile queues.
struct FakeEncoder {
  std::mutex m;
  std::vector<size_t> batches;
  std::promise<void> gate;
  std::shared_future<void> opened = gate.get_future().share();

  EmbeddingQueue::Runner runner() {
    return [this](std::span<const EncoderInput> rows) {
      opened.wait();
      std::vector<std::vector<float>> out;
      for (const EncoderInput& r : rows) {
        if (r.ids[0] < 0) throw std::runtime_error("bad row");
        out.push_back({static_cast<float>(r.ids[0]), static_cast<float>(r.ids.size())});
      }
      std::lock_guard lock(m);
      batches.push_back(rows.size());
      return out;
    };
  }
};

struct Submitted {
  std::shared_ptr<EmbeddingJob> job = std::make_shared<EmbeddingJob>();
  std::promise<EmbeddingOutcome> promise;
  std::future<EmbeddingOutcome> outcome = promise.get_future();

  explicit Submitted(std::vector<EncoderInput> inputs) {
    job->inputs = std::move(inputs);
    job->done = [this](EmbeddingOutcome&& o) { promise.set_value(std::move(o)); };
  }
};

TEST(EmbeddingQueue, GathersWaitingRequestsUpToTheTokenBudget) {
  FakeEncoder enc;
  EmbeddingQueue q(enc.runner(), /*max_batch_tokens=*/10, /*max_waiting=*/16);
  Submitted first({row(1, 4)});
  ASSERT_TRUE(q.submit(first.job));
  std::this_thread::sleep_for(50ms);  // the first batch is running (held at the gate)
  Submitted a({row(2, 3), row(3, 3)}), b({row(4, 4)}), c({row(5, 2)});
  ASSERT_TRUE(q.submit(a.job));
  ASSERT_TRUE(q.submit(b.job));
  ASSERT_TRUE(q.submit(c.job));
  enc.gate.set_value();
  const EmbeddingOutcome o1 = first.outcome.get(), oa = a.outcome.get(), ob = b.outcome.get(), oc = c.outcome.get();
  EXPECT_EQ(o1.vectors, (std::vector<std::vector<float>>{{1, 4}}));
  EXPECT_EQ(oa.vectors, (std::vector<std::vector<float>>{{2, 3}, {3, 3}}));
  EXPECT_EQ(ob.vectors, (std::vector<std::vector<float>>{{4, 4}}));
  EXPECT_EQ(oc.vectors, (std::vector<std::vector<float>>{{5, 2}}));
  // a and b (10 tokens) fill the second batch; c waits for the third.
  std::lock_guard lock(enc.m);
  EXPECT_EQ(enc.batches, (std::vector<size_t>{1, 3, 1}));
}

TEST(EmbeddingQueue, SplitsARequestOverTheBudget) {
  FakeEncoder enc;
  enc.gate.set_value();
  EmbeddingQueue q(enc.runner(), /*max_batch_tokens=*/5, /*max_waiting=*/16);
  // A row longer than the budget runs alone; the others pack two to a batch.
  Submitted s({row(1, 2), row(2, 2), row(3, 8), row(4, 2), row(5, 2), row(6, 2)});
  ASSERT_TRUE(q.submit(s.job));
  const EmbeddingOutcome o = s.outcome.get();
  ASSERT_EQ(o.status, 200);
  ASSERT_EQ(o.vectors.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(o.vectors[i][0], static_cast<float>(i + 1));
  std::lock_guard lock(enc.m);
  EXPECT_EQ(enc.batches, (std::vector<size_t>{2, 1, 2, 1}));
}

TEST(EmbeddingQueue, AFailedBatchFailsItsRequestsOnly) {
  FakeEncoder enc;
  enc.gate.set_value();
  EmbeddingQueue q(enc.runner(), 100, 16);
  Submitted bad({row(-1, 2)});
  ASSERT_TRUE(q.submit(bad.job));
  const EmbeddingOutcome o = bad.outcome.get();
  EXPECT_EQ(o.status, 500);
  EXPECT_FALSE(o.error.empty());
  Submitted good({row(7, 2)});
  ASSERT_TRUE(q.submit(good.job));
  EXPECT_EQ(good.outcome.get().vectors, (std::vector<std::vector<float>>{{7, 2}}));
}

TEST(EmbeddingQueue, FullQueueRefusesAndCancelAndStopEndWaitingRequests) {
  FakeEncoder enc;
  EmbeddingQueue q(enc.runner(), 100, /*max_waiting=*/2);
  Submitted running({row(1, 2)});
  ASSERT_TRUE(q.submit(running.job));
  std::this_thread::sleep_for(50ms);
  Submitted w1({row(2, 2)}), w2({row(3, 2)}), refused({row(4, 2)});
  ASSERT_TRUE(q.submit(w1.job));
  ASSERT_TRUE(q.submit(w2.job));
  EXPECT_FALSE(q.submit(refused.job));
  w1.job->cancelled = true;  // the client left
  q.cancel_waiting();        // the drain is over
  EXPECT_EQ(w1.outcome.get().status, 503);
  EXPECT_EQ(w2.outcome.get().status, 503);
  enc.gate.set_value();
  EXPECT_EQ(running.outcome.get().status, 200);  // the running batch finishes
  q.stop();
  Submitted late({row(5, 2)});
  EXPECT_FALSE(q.submit(late.job));
}

TEST(EmbeddingQueue, ALeftClientsRequestIsDropped) {
  FakeEncoder enc;
  EmbeddingQueue q(enc.runner(), 100, 16);
  Submitted running({row(1, 2)});
  ASSERT_TRUE(q.submit(running.job));
  std::this_thread::sleep_for(50ms);
  Submitted gone({row(2, 2)});
  ASSERT_TRUE(q.submit(gone.job));
  gone.job->cancelled = true;
  q.wake();
  enc.gate.set_value();
  EXPECT_EQ(gone.outcome.get().status, 499);
  EXPECT_EQ(running.outcome.get().status, 200);
  std::lock_guard lock(enc.m);
  EXPECT_EQ(enc.batches, (std::vector<size_t>{1}));
}

}  // namespace
}  // namespace kestrel::server
