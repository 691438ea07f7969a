// Corrupt, truncated and hostile GGUF files: each must give a kestrel::Error that says what is wrong,
// never a crash, a hang or an allocation sized by an untrusted count. scripts/test.sh reruns these under
// ASan/UBSan.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/dequant.h"
#include "core/error.h"
#include "formats/gguf.h"
#include "test_files.h"

namespace kestrel {
namespace {

using test::expect_error;

// Little-endian GGUF byte builder for hand-made files.
struct Bytes {
  std::vector<uint8_t> b;

  template <typename T>
  Bytes& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& str(std::string_view s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  Bytes& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
  Bytes& kv_str(std::string_view key, std::string_view v) { return str(key).u32(8).str(v); }
  // ne in ggml order (innermost first).
  Bytes& tensor(std::string_view name, std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (auto d : ne) put(d);
    return u32(type).u64(offset);
  }
  Bytes& pad(size_t align = 32) {
    b.resize((b.size() + align - 1) / align * align);
    return *this;
  }
  Bytes& zeros(size_t n) {
    b.resize(b.size() + n);
    return *this;
  }
};

constexpr uint32_t kF32 = 0, kQ4_0 = 2;

class GgufBadInput : public ::testing::Test {
 protected:
  std::string write(const Bytes& bytes) {
    const auto path = scratch_.path("bad.gguf");
    test::write_bytes(path, bytes.b);
    return path;
  }
  void expect_open_error(const Bytes& bytes, std::initializer_list<std::string_view> parts) {
    const auto path = write(bytes);
    expect_error([&] { GgufFile::open(path); }, parts);
  }
  test::ScratchDir scratch_;
};

TEST_F(GgufBadInput, MissingFileAndDirectory) {
  expect_error([&] { GgufFile::open(scratch_.path("nope.gguf")); }, {"cannot open", "nope.gguf"});
  expect_error([&] { GgufFile::open(scratch_.dir().string()); }, {"not a regular file"});
}

TEST_F(GgufBadInput, MagicAndVersion) {
  expect_open_error(Bytes{}, {"bad.gguf", "truncated", "magic"});
  Bytes ggml;
  ggml.b = {'G', 'G', 'M', 'L', 3, 0, 0, 0};
  expect_open_error(ggml, {"bad.gguf", "not a GGUF file"});
  expect_open_error(Bytes().header(0, 0, 1), {"unsupported GGUF version 1"});
  expect_open_error(Bytes().header(0, 0, 4), {"unsupported GGUF version 4"});
  expect_open_error(Bytes().header(0, 0, 0x03000000), {"big-endian"});
  EXPECT_NO_THROW(GgufFile::open(write(Bytes().header(0, 0, 2))));
  EXPECT_NO_THROW(GgufFile::open(write(Bytes().header(0, 0))));  // empty but valid, no data section
}

TEST_F(GgufBadInput, AbsurdCountsFailBeforeAllocating) {
  expect_open_error(Bytes().header(0, uint64_t{1} << 62), {"metadata count", "impossible"});
  expect_open_error(Bytes().header(UINT64_MAX, 0), {"tensor info count", "impossible"});
  expect_open_error(Bytes().header(0, 1).str("k").u32(9).u32(4).u64(uint64_t{1} << 61).zeros(16),
                    {"array count", "impossible", "'k'"});
  expect_open_error(Bytes().header(0, 1).str("k").u32(9).u32(8).u64(UINT64_MAX).zeros(16), {"impossible"});
  expect_open_error(Bytes().header(0, 1).u64(UINT64_MAX).zeros(16), {"metadata key", "truncated"});
  expect_open_error(Bytes().header(0, 1).str("k").u32(8).u64(uint64_t{1} << 63), {"string value", "truncated"});
}

TEST_F(GgufBadInput, MetadataStructure) {
  expect_open_error(Bytes().header(0, 1).str("k").u32(13).u32(0), {"unknown metadata value type 13", "'k'"});
  expect_open_error(Bytes().header(0, 1).str("k").u32(9).u32(77).u64(0), {"unknown metadata value type 77"});
  expect_open_error(Bytes().header(0, 2).kv_u32("a", 1).kv_u32("a", 2), {"duplicate metadata key", "'a'"});
  Bytes nested;
  nested.header(0, 1).str("deep").u32(9);
  for (int i = 0; i < 20; ++i) nested.u32(9).u64(1);
  nested.u32(4).u64(1).u32(0);
  expect_open_error(nested, {"nested deeper", "'deep'"});
  // An empty array is valid even though the gguf writer never produces one.
  auto f = GgufFile::open(write(Bytes().header(0, 1).str("e").u32(9).u32(5).u64(0)));
  EXPECT_TRUE(f->get_i32_array("e").empty());
}

TEST_F(GgufBadInput, Alignment) {
  expect_open_error(Bytes().header(0, 1).kv_u32("general.alignment", 3), {"general.alignment", "power of two"});
  expect_open_error(Bytes().header(0, 1).kv_u32("general.alignment", 0), {"power of two"});
  expect_open_error(Bytes().header(0, 1).kv_str("general.alignment", "x"), {"general.alignment"});
  expect_open_error(Bytes().header(1, 0).tensor("t", {8}, kF32, 16).pad().zeros(64),
                    {"'t'", "not a multiple of the alignment 32"});
}

TEST_F(GgufBadInput, TensorShapes) {
  auto one = [](std::vector<int64_t> ne, uint32_t type = kF32) {
    return Bytes().header(1, 0).tensor("w", std::move(ne), type, 0).pad().zeros(256);
  };
  expect_open_error(one({}), {"'w'", "0 dimensions"});
  expect_open_error(one({1, 1, 1, 1, 1}), {"'w'", "5 dimensions"});
  expect_open_error(one({4, 0}), {"'w'", "dimension 1 is 0"});
  expect_open_error(one({-4}), {"'w'", "dimension 0 is -4"});
  expect_open_error(one({int64_t{1} << 32, int64_t{1} << 32}), {"'w'", "element count overflows"});
  expect_open_error(one({int64_t{1} << 62}), {"'w'", "byte size overflows"});
  expect_open_error(one({48}, kQ4_0), {"'w'", "48 is not a multiple of the q4_0 block size 32"});
  const std::string long_name(40, 'w');
  expect_open_error(Bytes().header(1, 0).str(long_name).u32(1), {long_name, "tensor dimension", "truncated"});
}

TEST_F(GgufBadInput, TensorDataPlacement) {
  expect_open_error(Bytes().header(1, 0).tensor("w", {64}, kF32, 0).pad().zeros(255), {"'w'", "runs past the end"});
  expect_open_error(Bytes().header(1, 0).tensor("w", {8}, kF32, 1ull << 63).pad().zeros(64), {"runs past the end"});
  expect_open_error(Bytes().header(1, 0).tensor("w", {8}, kF32, UINT64_MAX - 31).pad().zeros(64),
                    {"runs past the end"});
  expect_open_error(Bytes().header(1, 0).tensor("w", {8}, kF32, 0), {"data section would start"});
  expect_open_error(Bytes().header(2, 0).tensor("a", {16}, kF32, 0).tensor("b", {16}, kF32, 32).pad().zeros(128),
                    {"'a' and 'b' overlap"});
  expect_open_error(Bytes().header(2, 0).tensor("a", {8}, kF32, 0).tensor("a", {8}, kF32, 32).pad().zeros(64),
                    {"duplicate tensor name", "'a'"});
  // Exactly filling the file is fine.
  auto f =
      GgufFile::open(write(Bytes().header(2, 0).tensor("a", {8}, kF32, 0).tensor("b", {8}, kF32, 32).pad().zeros(64)));
  EXPECT_EQ(f->tensor("b").numel(), 8);
}

TEST_F(GgufBadInput, UnknownGgmlTypeOpensButFailsOnAccess) {
  auto f = GgufFile::open(write(Bytes().header(1, 0).tensor("w", {8}, 99, 0).pad().zeros(64)));
  EXPECT_EQ(f->tensors()[0].type_name, "type 99");
  expect_error([&] { f->tensor("w"); }, {"'w'", "type 99", "does not support"});
}

// A prefix that cuts into the header or a tensor fails; one that only drops trailing padding opens.
TEST_F(GgufBadInput, TruncatedAtEveryPrefix) {
  const auto full = test::read_bytes(test::fixture_path("gguf/small.gguf"));
  const auto whole = GgufFile::open(test::fixture_path("gguf/small.gguf"));
  uint64_t needed = whole->data_offset();
  for (const auto& t : whole->tensors()) needed = std::max(needed, whole->data_offset() + t.offset + t.nbytes);
  const auto path = scratch_.path("prefix.gguf");
  for (size_t n = 0; n < full.size(); ++n) {
    test::write_bytes(path, full.data(), n);
    if (n < needed) {
      EXPECT_THROW(GgufFile::open(path), Error) << "prefix of " << n << " bytes";
    } else {
      EXPECT_NO_THROW(GgufFile::open(path)) << "prefix of " << n << " bytes";
    }
  }
}

// Uses everything a corrupted-but-accepted file offers, so the sanitizers see any bad access.
void exercise(const GgufFile& f) {
  for (const auto& [key, value] : f.metadata()) (void)value.to_string();
  for (const auto& info : f.tensors()) {
    try {
      const auto t = f.tensor(info.name);
      ASSERT_LE(info.offset + t.nbytes(), f.file_size() - f.data_offset());
      std::vector<float> row(t.cols());
      for (int64_t r = 0; r < t.rows(); ++r) dequantize_row(t.dtype, t.row(r), row.data(), t.cols());
    } catch (const Error&) {
    }
  }
}

TEST_F(GgufBadInput, FuzzRandomByteFlips) {
  const auto original = test::read_bytes(test::fixture_path("gguf/small.gguf"));
  const size_t header_bytes = GgufFile::open(test::fixture_path("gguf/small.gguf"))->data_offset();
  const auto path = scratch_.path("flipped.gguf");
  std::mt19937_64 rng(20240611);
  constexpr uint64_t kInteresting[] = {0, 1, 0x7f, 0xff, 0x7fffffff, 0xffffffff, 1ull << 32, 1ull << 63, ~0ull};
  int opened = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bytes = original;
    const int n_mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < n_mutations; ++m) {
      // Mostly the header, where the structure lives; sometimes anywhere.
      const size_t limit = rng() % 8 ? header_bytes : bytes.size();
      const size_t pos = rng() % limit;
      switch (rng() % 3) {
        case 0: bytes[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: bytes[pos] = static_cast<uint8_t>(rng()); break;
        default: {
          const uint64_t v = kInteresting[rng() % std::size(kInteresting)];
          std::memcpy(&bytes[pos], &v, std::min<size_t>(8, bytes.size() - pos));
        }
      }
    }
    test::write_bytes(path, bytes);
    try {
      auto f = GgufFile::open(path);
      ++opened;
      exercise(*f);
    } catch (const Error&) {
    }
  }
  // Most single flips land in tensor data or string bytes, so a good share still opens.
  EXPECT_GT(opened, 100);
}

}  // namespace
}  // namespace kestrel
