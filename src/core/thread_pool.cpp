#include "core/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace kestrel {
namespace {

// How long a thread spins before sleeping. A decode step's ops arrive every few microseconds;
// ~50k pauses is on the order of a millisecond, after which the core is given back.
constexpr int kSpinIterations = 50000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Set while a thread executes a job of some pool, so nested run() calls execute inline.
thread_local bool t_in_job = false;

}  // namespace

// Sleeping uses a mutex and condition variables (the slow path); the Dekker-style pairs below make
// the wake-ups safe without taking the mutex on the fast path: a sleeper publishes itself (seq_cst)
// under the mutex before re-checking its condition, and the other side changes the condition
// (seq_cst) before checking for sleepers, so one of the two always sees the other.

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  { std::lock_guard lock(sleep_mu_); }
  cv_start_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::run_job(int index, int n_threads) {
  try {
    (*job_)(index, n_threads);
  } catch (...) {
    std::lock_guard lock(error_mu_);
    if (!error_) error_ = std::current_exception();
  }
}

void ThreadPool::worker(int index) {
  t_in_job = true;  // a worker only ever runs jobs
  // Not generation_.load(): a job may have been posted before this thread got to run.
  uint64_t seen = 0;
  for (;;) {
    for (int spins = 0; generation_.load(std::memory_order_acquire) == seen;) {
      if (++spins < kSpinIterations) {
        cpu_relax();
        continue;
      }
      std::unique_lock lock(sleep_mu_);
      sleepers_.fetch_add(1);
      cv_start_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    run_job(index, n_threads_);
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard lock(sleep_mu_);
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1 || t_in_job) {
    for (int i = 0; i < n_threads_; ++i) fn(i, n_threads_);
    return;
  }
  std::lock_guard run_lock(run_mu_);
  job_ = &fn;
  error_ = nullptr;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes job_ and pending_
  if (sleepers_.load() > 0) {
    std::lock_guard lock(sleep_mu_);
    cv_start_.notify_all();
  }

  t_in_job = true;
  run_job(0, n_threads_);
  t_in_job = false;

  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0;) {
    if (++spins < kSpinIterations) {
      cpu_relax();
      continue;
    }
    // A worker was descheduled: stop burning the core.
    std::unique_lock lock(sleep_mu_);
    caller_sleeping_.store(true);
    cv_done_.wait(lock, [&] { return pending_.load() == 0; });
    caller_sleeping_.store(false);
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  int64_t chunks = std::min<int64_t>(n_threads_, std::max<int64_t>(1, n / std::max<int64_t>(1, grain)));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  run([&](int t, int) {
    if (t >= chunks) return;
    int64_t begin = n * t / chunks, end = n * (t + 1) / chunks;
    if (begin < end) fn(begin, end);
  });
}

namespace {
std::atomic<int> g_default_threads{0};
}

void ThreadPool::set_default_threads(int n) {
  g_default_threads = n;
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    int n = g_default_threads.load();
    return n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }());
  return pool;
}

}  // namespace kestrel
