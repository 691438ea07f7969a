#include "core/error.h"

#include "core/log.h"

namespace kestrel::detail {

void throw_error(const char* file, int line, const std::string& msg) {
  log::debug("error raised at {}:{}: {}", file, line, msg);
  throw Error(msg);
}

}  // namespace kestrel::detail
