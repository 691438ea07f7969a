// Kestrel's version, as `kestrel --version` and the server's /version report it.
#pragma once

namespace kestrel {

inline constexpr const char* kVersion = "0.1.0";

}  // namespace kestrel
