// The spending of one render against its RenderLimits (chat_template.h). The interpreter installs a
// budget on its thread for the length of a render; the operations whose work grows with their input
// (loops, copies, repr, comparisons, JSON, sorting) live in the value model and the builtins, which
// have no interpreter at hand, so they charge the thread's budget through the free functions below.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tokenizer/chat_template/chat_template.h"

namespace kestrel::chat_template {

class RenderBudget {
 public:
  // Installs itself as the thread's budget until destroyed (renders do not nest, but this restores
  // whatever was installed before).
  explicit RenderBudget(const RenderLimits& limits);
  ~RenderBudget();
  RenderBudget(const RenderBudget&) = delete;
  RenderBudget& operator=(const RenderBudget&) = delete;

  const RenderLimits& limits() const { return limits_; }
  void charge_steps(uint64_t n) {
    steps_ += n;
    if (steps_ > limits_.max_steps) [[unlikely]]
      over_steps();
  }
  void charge_bytes(size_t n);
  void check_string(size_t bytes) const;
  void check_items(size_t n) const;
  void check_output(size_t bytes) const;

  // Counts one level of nesting for its lifetime.
  class Depth {
   public:
    explicit Depth(RenderBudget& b);
    ~Depth() { --b_.depth_; }
    Depth(const Depth&) = delete;
    Depth& operator=(const Depth&) = delete;

   private:
    RenderBudget& b_;
  };

  static RenderBudget* current();

 private:
  [[noreturn]] void over_steps() const;

  RenderLimits limits_;
  uint64_t steps_ = 0;
  size_t bytes_ = 0;
  int depth_ = 0;
  RenderBudget* previous_;
};

// Charge the thread's budget; without one (builtins called outside a render) they do nothing.
void charge_steps(uint64_t n);
// A string or list being made or copied: `bytes` count against max_bytes, one step per 64 of them.
void charge_bytes(size_t bytes);

}  // namespace kestrel::chat_template
