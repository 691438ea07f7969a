#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

namespace kestrel {

TEST(ThreadPool, RunsEveryIndexOncePerJob) {
  ThreadPool pool(3);
  for (int job = 0; job < 300; ++job) {  // back-to-back jobs: the spinning fast path
    std::vector<std::atomic<int>> hits(3);
    pool.run([&](int i, int n) {
      ASSERT_EQ(n, 3);
      hits[i].fetch_add(1);
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, WakesSleepingWorkers) {
  ThreadPool pool(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // long enough for workers to block
  std::atomic<int> sum{0};
  pool.parallel_for(1000, [&](int64_t b, int64_t e) { sum += static_cast<int>(e - b); });
  EXPECT_EQ(sum.load(), 1000);
}

TEST(ThreadPool, ParallelForCoversRangeWithGrain) {
  ThreadPool pool(4);
  for (int64_t n : {1, 3, 4, 5, 1001}) {
    std::vector<std::atomic<int>> seen(n);
    pool.parallel_for(
        n,
        [&](int64_t b, int64_t e) {
          EXPECT_TRUE(e - b >= 2 || e - b == n);
          for (int64_t i = b; i < e; ++i) seen[i]++;
        },
        2);
    for (auto& s : seen) ASSERT_EQ(s.load(), 1);
  }
}

TEST(ThreadPool, ExceptionFromAnyThreadReachesCaller) {
  ThreadPool pool(2);
  for (int thrower : {0, 1}) {
    EXPECT_THROW(pool.run([&](int i, int) {
      if (i == thrower) throw std::runtime_error("boom");
    }),
                 std::runtime_error);
  }
  std::atomic<int> ok{0};
  pool.run([&](int, int) { ok++; });  // still usable afterwards
  EXPECT_EQ(ok.load(), 2);
}

TEST(ThreadPool, NestedRunExecutesInline) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run([&](int, int) { pool.run([&](int, int) { inner++; }); });
  EXPECT_EQ(inner.load(), 4);  // each of the 2 outer threads ran the 2 inner indices itself
}

TEST(ThreadPool, ConcurrentCallersAreSerialised) {
  ThreadPool pool(2);
  std::atomic<int> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int j = 0; j < 200; ++j) pool.run([&](int, int) { total++; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 3 * 200 * 2);
}

}  // namespace kestrel
