#include "formats/pnm.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "core/error.h"
#include "test_files.h"

namespace kestrel {
namespace {

using test::expect_error;

TEST(Pnm, ReadsBinaryPpm) {
  const std::string bytes = std::string("P6\n2 1\n255\n") + std::string("\x01\x02\x03\xff\x00\x80", 6);
  const RgbImage img = parse_pnm(bytes);
  EXPECT_EQ(img.width, 2);
  EXPECT_EQ(img.height, 1);
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{1, 2, 3, 255, 0, 128}));
}

TEST(Pnm, ReadsAsciiWithCommentsAndRescalesMaxval) {
  const RgbImage img = parse_pnm("P3 # a comment\n# another\n1 2 15\n15 0 5\n# mid-data comment\n1 2 3\n");
  EXPECT_EQ(img.width, 1);
  EXPECT_EQ(img.height, 2);
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{255, 0, 85, 17, 34, 51}));
}

TEST(Pnm, GreyIsReplicatedAndSixteenBitIsBigEndian) {
  EXPECT_EQ(parse_pnm("P2 2 1 255 7 9").rgb, (std::vector<uint8_t>{7, 7, 7, 9, 9, 9}));
  const RgbImage img = parse_pnm(std::string("P5 1 1 65535\n") + "\xff\xff");
  EXPECT_EQ(img.rgb, (std::vector<uint8_t>{255, 255, 255}));
  EXPECT_EQ(parse_pnm(std::string("P5 1 1 65535\n") + std::string("\x01\x00", 2)).rgb[0], 1);  // 256 * 255 / 65535
}

TEST(Pnm, RefusesMalformedImagesWithClearErrors) {
  expect_error([] { parse_pnm(""); }, {"not a PPM/PGM"});
  expect_error([] { parse_pnm("\x89PNG\r\n"); }, {"not a PPM/PGM", "convert"});
  expect_error([] { parse_pnm("P6"); }, {"ends before its width"});
  expect_error([] { parse_pnm("P6 2 x"); }, {"expected a number for its height"});
  expect_error([] { parse_pnm("P6 0 1 255 "); }, {"width is 0"});
  expect_error([] { parse_pnm("P6 1 1 0 "); }, {"maxval is 0"});
  expect_error([] { parse_pnm("P6 1 1 65536 "); }, {"maxval exceeds"});
  expect_error([] { parse_pnm("P6 99999999999 1 255 "); }, {"width exceeds"});
  expect_error([] { parse_pnm("P6 16384 16384 255 "); }, {"larger than"});
  expect_error([] { parse_pnm("P6 2 2 255\nabc"); }, {"too few", "truncated"});
  expect_error([] { parse_pnm("P6 1 1 255"); }, {"whitespace byte after maxval"});
  expect_error([] { parse_pnm("P3 1 1 10 1 2 11"); }, {"sample 11 exceeds maxval 10"});
  expect_error([] { parse_pnm("P2 2 1 255 7"); }, {"too few"});
  expect_error([] { parse_pnm("P2 3 1 255 7 8  "); }, {"ends before its sample"});
  expect_error([] { load_pnm("/nonexistent/image.ppm"); }, {"cannot read image", "/nonexistent/image.ppm"});
}

// Mutations of valid images either parse into a consistent image or throw kestrel::Error: nothing else
// (under ASan, no out-of-bounds read). tests/fuzz/formats_fuzzer.cc runs the same check under libFuzzer.
TEST(Pnm, MutatedInputsParseOrThrowKestrelErrors) {
  const std::vector<std::string> seeds = {std::string("P6\n2 2\n255\n") + std::string(12, '\x7f'),
                                          "P3 2 1 255 1 2 3 4 5 6\n", "P2 # c\n2 2 9 1 2 3 4",
                                          std::string("P5 2 1 65535 ") + "\x01\x02\x03\x04"};
  std::mt19937 rng(20);
  int parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = seeds[i % seeds.size()];
    for (int m = std::uniform_int_distribution<int>(1, 4)(rng); m > 0; --m) {
      const size_t at = std::uniform_int_distribution<size_t>(0, s.size())(rng);
      switch (std::uniform_int_distribution<int>(0, 2)(rng)) {
        case 0:
          if (at < s.size()) s[at] = static_cast<char>(rng());
          break;
        case 1: s.insert(at, 1, "0123456789 #\nP"[rng() % 14]); break;
        default: s.resize(at);
      }
    }
    try {
      const RgbImage img = parse_pnm(s);
      ASSERT_EQ(img.rgb.size(), static_cast<size_t>(img.width) * img.height * 3) << s;
      ++parsed;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(parsed, 100);  // the mutations keep some inputs valid, so the parser's success path is fuzzed too
}

}  // namespace
}  // namespace kestrel
