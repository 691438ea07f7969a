// Netpbm images (PPM P6/P3 colour, PGM P5/P2 grey), the input format of `kestrel classify --image`: small,
// dependency-free, and what scripts/train/sentiment/synth_images.py writes. Every read is bounds-checked;
// malformed input throws kestrel::Error saying what is wrong, never reads past the buffer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel {

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major, RGB interleaved; grey is replicated
};

// Images larger than this are refused before allocating (a header can claim anything).
inline constexpr int64_t kMaxPnmPixels = int64_t{1} << 24;

// Parses a whole file's bytes. maxval may be 1..65535; samples are rescaled to 0..255 (16-bit samples are
// big-endian, as the format says). Comments (# to the end of a line) are allowed in the header.
RgbImage parse_pnm(std::string_view bytes, std::string_view where = "image");
RgbImage load_pnm(const std::string& path);

}  // namespace kestrel
