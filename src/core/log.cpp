#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

namespace kestrel::log {
namespace {

Level level_from_env() {
  const char* e = std::getenv("KESTREL_LOG");
  if (!e) return Level::Warn;
  if (!std::strcmp(e, "error")) return Level::Error;
  if (!std::strcmp(e, "info")) return Level::Info;
  if (!std::strcmp(e, "debug")) return Level::Debug;
  return Level::Warn;
}

std::atomic<int>& current() {
  static std::atomic<int> l{static_cast<int>(level_from_env())};
  return l;
}

}  // namespace

Level level() {
  return static_cast<Level>(current().load(std::memory_order_relaxed));
}
void set_level(Level l) {
  current().store(static_cast<int>(l));
}

void write(Level l, std::string_view msg) {
  static const char* names[] = {"error", "warn", "info", "debug"};
  static std::mutex mu;
  std::lock_guard lock(mu);
  std::fprintf(stderr, "kestrel %s: %.*s\n", names[static_cast<int>(l)], static_cast<int>(msg.size()), msg.data());
}

void warn_once(std::string_view key, std::string_view msg) {
  static std::mutex mu;
  static std::set<std::string, std::less<>> seen;
  {
    std::lock_guard lock(mu);
    if (!seen.emplace(key).second) return;
  }
  if (level() >= Level::Warn) write(Level::Warn, msg);
}

}  // namespace kestrel::log
