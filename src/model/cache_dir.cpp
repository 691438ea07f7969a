#include "model/cache_dir.h"

#include <cstdlib>

namespace kestrel {

std::string cache_dir() {
  const char* cache = std::getenv("KESTREL_CACHE");
  const char* home = std::getenv("HOME");
  return cache && *cache ? cache : std::string(home ? home : ".") + "/.cache/kestrel";
}

}  // namespace kestrel
