// Leveled logging to stderr. Level from KESTREL_LOG (error, warn, info, debug) or set_level().
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace kestrel::log {

enum class Level { Error = 0, Warn = 1, Info = 2, Debug = 3 };

Level level();
void set_level(Level l);
void write(Level l, std::string_view msg);

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::Error) write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::Warn) write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::Info) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() >= Level::Debug) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}

// Logs a message once per distinct key (used for dispatcher fallbacks).
void warn_once(std::string_view key, std::string_view msg);

}  // namespace kestrel::log
