// A few threads for the request work that must not run on the I/O thread: parsing JSON bodies,
// rendering chat templates and tokenizing. A 4 MiB prompt takes a while to tokenize, and while it
// does, every other connection (streams, /health) must keep flowing. Tasks run in arrival order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kestrel::server {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();  // stop()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues a task (any thread). A task must not throw.
  void post(std::function<void()> task);
  // Runs what is queued, then joins the threads; later posts run on the caller's thread.
  void stop();

 private:
  void work();

  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace kestrel::server
