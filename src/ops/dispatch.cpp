#include "ops/dispatch.h"

#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"

namespace kestrel::ops {

ThreadPool& Context::threads() const {
  return pool ? *pool : ThreadPool::global();
}

Runtime& Context::lane() const {
  KS_CHECK(runtime != nullptr, "this {} context has no execution lane; create it with backends::make_context()",
           device == Device::Cpu ? "CPU" : "CUDA");
  return *runtime;
}

void log_fallback(const std::string& op, const std::string& forced, const std::string& why, const std::string& used) {
  log::warn_once(op + "/" + forced + "/" + used,
                 fmt::format("{}: forced variant '{}' can't run this call ({}); using '{}'", op, forced, why, used));
}

void fail_no_variant(const std::string& op, Device device, const std::string& why) {
  KS_FAIL("no {} implementation of {} supports this call{}{}", device == Device::Cpu ? "CPU" : "CUDA", op,
          why.empty() ? "" : ": ", why);
}

Registries& registries() {
  static Registries* r = new Registries();  // never destroyed: variants may run during static teardown
  return *r;
}

}  // namespace kestrel::ops
