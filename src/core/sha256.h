// SHA-256 (FIPS 180-4), for comparing secrets by digest: equal-length digests compared in constant time
// reveal neither the secret's contents nor its length.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace kestrel {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest sha256(std::string_view data);

// True when the digests are equal; the time taken does not depend on where they differ.
bool digests_equal(const Sha256Digest& a, const Sha256Digest& b);

}  // namespace kestrel
