// A fixed pool of worker threads for data-parallel kernels. parallel_for splits [0, n) into one
// contiguous chunk per thread and blocks until all chunks are done; the calling thread takes chunk 0,
// so a pool of size 1 runs inline with no synchronisation.
#pragma once

#include <condition_variable>
#include <cstdint>
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

  int n_threads_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int, int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace kestrel
