// A fixed pool of worker threads for data-parallel kernels. parallel_for splits [0, n) into one
// contiguous chunk per thread and blocks until all chunks are done; the calling thread takes chunk 0,
// so a pool of size 1 runs inline with no synchronisation.
//
// Latency matters more than fairness here: a decode step issues hundreds of parallel ops of a few
// microseconds each, so workers spin (with a pause instruction) for a while after each job before
// sleeping on a condition variable, and the caller spins for completion. A job that throws on any thread is
// rethrown to the caller after every thread has finished. run() called from inside a job runs the
// nested job inline on the calling thread instead of deadlocking.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kestrel {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // fn(thread_index, n_threads): every thread runs it once.
  void run(const std::function<void(int, int)>& fn);
  // fn(begin, end) over contiguous chunks of [0, n), at least `grain` items each.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

  // Process-wide pool; size from set_default_threads() or the number of cores.
  static ThreadPool& global();
  static void set_default_threads(int n);

 private:
  void worker(int index);
  void run_job(int index, int n_threads);

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex run_mu_;  // one job at a time when several threads share a pool
  const std::function<void(int, int)>* job_ = nullptr;
  // Bumped once per job (and on shutdown); workers spin until it changes, then sleep on cv_start_.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};   // workers still running the current job
  std::atomic<int> sleepers_{0};  // workers blocked on cv_start_ (the caller skips the wake-up if none)
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  std::mutex sleep_mu_;
  std::condition_variable cv_start_, cv_done_;
  std::mutex error_mu_;
  std::exception_ptr error_;
};

}  // namespace kestrel
