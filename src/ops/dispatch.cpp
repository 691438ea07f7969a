#include "ops/dispatch.h"

#include "backends/cpu/register.h"
#ifdef KESTREL_HAVE_CUDA
#include "backends/cuda/register.h"
#endif
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"

namespace kestrel::ops {

ThreadPool& Context::threads() const { return pool ? *pool : ThreadPool::global(); }

void log_fallback(const std::string& op, const std::string& forced, const std::string& why, const std::string& used) {
  log::warn_once(op + "/" + forced + "/" + used,
                 fmt::format("{}: forced variant '{}' can't run this call ({}); using '{}'", op, forced, why, used));
}

void fail_no_variant(const std::string& op, Device device, const std::string& why) {
  KS_FAIL("no {} implementation of {} supports this call{}{}", device == Device::Cpu ? "CPU" : "CUDA", op,
          why.empty() ? "" : ": ", why);
}

Registries& registries() {
  static Registries* r = [] {
    auto* regs = new Registries();
    backends::cpu::register_variants(*regs);
#ifdef KESTREL_HAVE_CUDA
    backends::cuda::register_variants(*regs);
#endif
    return regs;
  }();
  return *r;
}

}  // namespace kestrel::ops
