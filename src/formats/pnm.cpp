#include "formats/pnm.h"

#include <fstream>
#include <iterator>

#include "core/error.h"

namespace kestrel {
namespace {

class Reader {
 public:
  Reader(std::string_view b, std::string_view where) : b_(b), where_(where) {}

  void skip_space_and_comments() {
    while (pos_ < b_.size()) {
      if (b_[pos_] == '#') {
        while (pos_ < b_.size() && b_[pos_] != '\n' && b_[pos_] != '\r') ++pos_;
      } else if (is_space(b_[pos_])) {
        ++pos_;
      } else {
        break;
      }
    }
  }

  // A header or ASCII-sample integer in [lo, hi], after whitespace and comments.
  int64_t integer(const char* what, int64_t lo, int64_t hi) {
    skip_space_and_comments();
    KS_CHECK(pos_ < b_.size(), "{}: ends before its {}; is the file truncated?", where_, what);
    KS_CHECK(b_[pos_] >= '0' && b_[pos_] <= '9', "{}: expected a number for its {}, found byte 0x{:02x}", where_, what,
             static_cast<unsigned char>(b_[pos_]));
    int64_t v = 0;
    while (pos_ < b_.size() && b_[pos_] >= '0' && b_[pos_] <= '9') {
      v = v * 10 + (b_[pos_++] - '0');
      KS_CHECK(v <= hi, "{}: its {} exceeds {}", where_, what, hi);
    }
    KS_CHECK(v >= lo, "{}: its {} is {}, below {}", where_, what, v, lo);
    return v;
  }

  // The single whitespace byte that ends a binary header.
  void one_space() {
    KS_CHECK(pos_ < b_.size() && is_space(b_[pos_]), "{}: expected one whitespace byte after maxval", where_);
    ++pos_;
  }

  std::string_view rest() const { return b_.substr(pos_); }
  std::string_view where() const { return where_; }

 private:
  static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
  std::string_view b_;
  std::string_view where_;
  size_t pos_ = 0;
};

}  // namespace

RgbImage parse_pnm(std::string_view bytes, std::string_view where) {
  KS_CHECK(bytes.size() >= 2 && bytes[0] == 'P' &&
               (bytes[1] == '2' || bytes[1] == '3' || bytes[1] == '5' || bytes[1] == '6'),
           "{}: not a PPM/PGM image (P6, P3, P5 or P2); convert it first, e.g. `convert in.png out.ppm`", where);
  const char kind = bytes[1];
  const bool colour = kind == '3' || kind == '6', binary = kind == '5' || kind == '6';
  Reader r(bytes.substr(2), where);
  RgbImage img;
  img.width = static_cast<int>(r.integer("width", 1, kMaxPnmPixels));
  img.height = static_cast<int>(r.integer("height", 1, kMaxPnmPixels));
  KS_CHECK(int64_t{img.width} * img.height <= kMaxPnmPixels, "{}: {}x{} is larger than the {} pixels accepted", where,
           img.width, img.height, kMaxPnmPixels);
  const auto maxval = static_cast<int>(r.integer("maxval", 1, 65535));
  const int channels = colour ? 3 : 1;
  const size_t pixels = static_cast<size_t>(img.width) * img.height, samples = pixels * channels;
  const size_t width = maxval > 255 ? 2 : 1;
  if (binary) r.one_space();
  const std::string_view data = r.rest();
  // Checked before allocating: binary samples take `width` bytes each, ASCII ones at least two (digit and
  // separator; the last may end the file).
  KS_CHECK(data.size() >= (binary ? samples * width : 2 * samples - 1),
           "{}: {} bytes of pixel data are too few for a {}x{} image; truncated?", where, data.size(), img.width,
           img.height);
  img.rgb.resize(pixels * 3);
  for (size_t i = 0; i < samples; ++i) {
    int v = 0;
    if (binary) {
      const auto hi = static_cast<unsigned char>(data[i * width]);
      v = width == 2 ? hi << 8 | static_cast<unsigned char>(data[i * width + 1]) : hi;
    } else {
      v = static_cast<int>(r.integer("sample", 0, 65535));
    }
    KS_CHECK(v <= maxval, "{}: sample {} exceeds maxval {}", where, v, maxval);
    const auto scaled = static_cast<uint8_t>((v * 255 + maxval / 2) / maxval);
    if (colour)
      img.rgb[i] = scaled;
    else
      img.rgb[i * 3] = img.rgb[i * 3 + 1] = img.rgb[i * 3 + 2] = scaled;
  }
  return img;
}

RgbImage load_pnm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KS_CHECK(in.good(), "cannot read image '{}'", path);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_pnm(bytes, path);
}

}  // namespace kestrel
