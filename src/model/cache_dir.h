// Where downloaded models live: $KESTREL_CACHE, else ~/.cache/kestrel (scripts/setup.sh,
// scripts/fetch_test_vocabs.sh and scripts/fetch_models.sh fill it).
#pragma once

#include <string>

namespace kestrel {
std::string cache_dir();
}  // namespace kestrel
