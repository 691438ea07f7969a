#include "tokenizer/chat_template/budget.h"

#include <algorithm>

namespace kestrel {

RenderLimits RenderLimits::for_input(size_t context_bytes) {
  RenderLimits l;
  // A template copies each message a few times (lookups return copies) and the prompt holds it once.
  l.max_bytes = std::max(l.max_bytes, 64 * context_bytes);
  l.max_string_bytes = std::max(l.max_string_bytes, 4 * context_bytes);
  l.max_output_bytes = std::max(l.max_output_bytes, 4 * context_bytes);
  l.max_steps = std::max<uint64_t>(l.max_steps, l.max_bytes / 64 * 2);
  return l;
}

namespace chat_template {
namespace {

thread_local RenderBudget* t_current = nullptr;

constexpr size_t kBytesPerStep = 64;

[[noreturn]] void over(const std::string& what) {
  throw TemplateBudgetError("the chat template went over its render budget: " + what);
}

}  // namespace

RenderBudget::RenderBudget(const RenderLimits& limits) : limits_(limits), previous_(t_current) {
  t_current = this;
}

RenderBudget::~RenderBudget() {
  t_current = previous_;
}

RenderBudget* RenderBudget::current() {
  return t_current;
}

void RenderBudget::over_steps() const {
  over(
      fmt::format("more than {} steps (statements, expressions, loop iterations and elements visited); the "
                  "template loops too long or its work grows too fast with the conversation",
                  limits_.max_steps));
}

void RenderBudget::charge_bytes(size_t n) {
  bytes_ += n;
  if (bytes_ > limits_.max_bytes)
    over(fmt::format("more than {} bytes of strings and lists made or copied", limits_.max_bytes));
  charge_steps(1 + n / kBytesPerStep);
}

void RenderBudget::check_string(size_t bytes) const {
  if (bytes > limits_.max_string_bytes)
    over(fmt::format("a string of {} bytes (the limit is {})", bytes, limits_.max_string_bytes));
}

void RenderBudget::check_items(size_t n) const {
  if (n > limits_.max_list_items)
    over(fmt::format("a list or dict of {} items (the limit is {})", n, limits_.max_list_items));
}

void RenderBudget::check_output(size_t bytes) const {
  if (bytes > limits_.max_output_bytes) over(fmt::format("more than {} bytes of output", limits_.max_output_bytes));
}

RenderBudget::Depth::Depth(RenderBudget& b) : b_(b) {
  if (++b_.depth_ > b_.limits_.max_depth) {
    --b_.depth_;
    over(fmt::format("nesting deeper than {} (statements, expressions and macro calls)", b_.limits_.max_depth));
  }
}

void charge_steps(uint64_t n) {
  if (RenderBudget* b = t_current) b->charge_steps(n);
}

void charge_bytes(size_t bytes) {
  if (RenderBudget* b = t_current) b->charge_bytes(bytes);
}

}  // namespace chat_template
}  // namespace kestrel
