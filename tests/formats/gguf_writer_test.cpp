// GgufWriter: what it writes reads back through GgufFile with every metadata value (all 13 types, nested
// arrays) and every tensor as given; a failed write leaves no file behind.
#include "formats/gguf_writer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "formats/gguf.h"
#include "test_files.h"

namespace kestrel {
namespace {

using test::expect_error;

// Copies every key and every tensor Kestrel can read from `src` into a writer.
GgufWriter copy_of(const std::shared_ptr<GgufFile>& src) {
  GgufWriter w;
  for (const auto& [k, v] : src->metadata()) w.set(k, v);
  for (const GgufTensorInfo& t : src->tensors()) {
    if (!t.dtype) continue;
    w.add_tensor(t.name, *t.dtype, t.shape, [src, name = t.name](std::vector<uint8_t>& buf) {
      const Tensor x = src->tensor(name);
      buf.assign(static_cast<const uint8_t*>(x.data), static_cast<const uint8_t*>(x.data) + x.nbytes());
    });
  }
  return w;
}

TEST(GgufWriter, RoundTripsMetadataOfEveryTypeAndTensors) {
  test::ScratchDir dir;
  {
    const auto src = GgufFile::open(test::fixture_path("gguf/small.gguf"));
    const std::string out = dir.path("copy.gguf");
    size_t calls = 0, total = 0;
    copy_of(src).write(out, [&](size_t done, size_t n) { calls = done, total = n; });
    EXPECT_EQ(calls, total);
    const auto got = GgufFile::open(out);
    EXPECT_EQ(got->version(), 3u);
    ASSERT_EQ(got->metadata().size(), src->metadata().size());
    for (size_t i = 0; i < src->metadata().size(); ++i) {
      EXPECT_EQ(got->metadata()[i].first, src->metadata()[i].first);
      EXPECT_EQ(got->metadata()[i].second.type(), src->metadata()[i].second.type());
      EXPECT_EQ(got->metadata()[i].second.to_string(1u << 20), src->metadata()[i].second.to_string(1u << 20))
          << src->metadata()[i].first;
    }
    for (const GgufTensorInfo& t : src->tensors()) {
      if (!t.dtype) continue;
      const GgufTensorInfo* g = got->find_tensor(t.name);
      ASSERT_NE(g, nullptr) << t.name;
      EXPECT_EQ(g->shape, t.shape);
      EXPECT_EQ(g->dtype, t.dtype);
      EXPECT_EQ(g->offset % got->alignment(), 0u);
      const Tensor a = src->tensor(t.name), b = got->tensor(t.name);
      ASSERT_EQ(a.nbytes(), b.nbytes());
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes()), 0) << t.name;
    }
  }
}

TEST(GgufWriter, ReplacesAKeyInPlace) {
  test::ScratchDir dir;
  GgufWriter w;
  w.set("a", GgufValue(GgufValue::Storage(uint32_t{1})));
  w.set("b", GgufValue(GgufValue::Storage(std::string("x"))));
  w.set("a", GgufValue(GgufValue::Storage(uint32_t{7})));
  w.write(dir.path("kv.gguf"));
  const auto f = GgufFile::open(dir.path("kv.gguf"));
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "a");
  EXPECT_EQ(f->get_u32("a"), 7u);
  EXPECT_EQ(f->get_string("b"), "x");
}

TEST(GgufWriter, AFailedWriteLeavesNoFile) {
  test::ScratchDir dir;
  GgufWriter w;
  w.add_tensor("t", DType::F32, {2, 4}, [](std::vector<uint8_t>& buf) { buf.resize(3); });  // 32 bytes due
  const std::string out = dir.path("short.gguf");
  expect_error([&] { w.write(out); }, {"tensor 't'", "3 bytes", "32"});
  EXPECT_TRUE(std::filesystem::is_empty(dir.dir()));
  expect_error([&] { w.write(dir.path("missing/dir/x.gguf")); }, {"cannot create"});
  expect_error([&] { w.add_tensor("q", DType::Q8_0, {2, 33}, {}); }, {"not whole", "q8_0"});
}

}  // namespace
}  // namespace kestrel
