// GGUF reader against the fixture written by scripts/fixtures/formats/make_gguf_fixtures.py (the gguf
// PyPI package is the oracle for both the container and the dequantized values) and the default model.
#include "formats/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../common/skip_or_fail.h"
#include "../model/test_paths.h"
#include "core/dequant.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/describe.h"
#include "test_files.h"

namespace kestrel {
namespace {

using test::expect_error;

std::shared_ptr<GgufFile> open_small() {
  return GgufFile::open(test::fixture_path("gguf/small.gguf"));
}

TEST(GgufMetadata, ScalarsOfEveryType) {
  auto f = open_small();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture"), "test");
  EXPECT_EQ(f->get_string("general.name"), "kestrel formats fixture");
  EXPECT_EQ(f->find("test.u8")->type(), GgufType::U8);
  EXPECT_EQ(*f->find("test.u8")->get_if<uint8_t>(), 200);
  EXPECT_EQ(*f->find("test.i8")->get_if<int8_t>(), -100);
  EXPECT_EQ(*f->find("test.u16")->get_if<uint16_t>(), 60000);
  EXPECT_EQ(*f->find("test.i16")->get_if<int16_t>(), -30000);
  EXPECT_EQ(f->get_u32("test.u32"), 4000000000u);
  EXPECT_EQ(f->get_i32("test.i32"), -2000000000);
  EXPECT_EQ(f->get_f32("test.f32"), 1.5f);
  EXPECT_TRUE(f->get_bool("test.bool"));
  EXPECT_EQ(f->get_string("test.string"), "h\xc3\xa9llo w\xc3\xb6rld");
  EXPECT_EQ(f->get_u64("test.u64"), 18000000000000000000ull);
  EXPECT_EQ(*f->find("test.i64")->get_if<int64_t>(), -9000000000000000000ll);
  EXPECT_EQ(*f->find("test.f64")->get_if<double>(), -2.25e300);
  EXPECT_EQ(f->find("test.f64")->type(), GgufType::F64);
}

TEST(GgufMetadata, ArraysOfEveryType) {
  auto f = open_small();
  auto array = [&](const char* key) -> const GgufArray& { return *f->find(key)->get_if<GgufArray>(); };
  EXPECT_EQ(f->get_i32_array("test.arr.u8"), (std::vector<int32_t>{1, 2, 255}));
  EXPECT_EQ(f->get_i32_array("test.arr.i8"), (std::vector<int32_t>{-128, 0, 127}));
  EXPECT_EQ(f->get_i32_array("test.arr.u16"), (std::vector<int32_t>{0, 65535}));
  EXPECT_EQ(f->get_i32_array("test.arr.i16"), (std::vector<int32_t>{-32768, 32767}));
  EXPECT_EQ(*array("test.arr.u32").at(1).as_u64(), 4294967295u);
  EXPECT_EQ(f->get_i32_array("test.arr.i32"), (std::vector<int32_t>{-7, 0, 7, 2147483647}));
  EXPECT_EQ(f->get_f32_array("test.arr.f32"), (std::vector<float>{0.5f, -1.25f, 3.0f}));
  EXPECT_EQ(array("test.arr.bool").elem_type(), GgufType::Bool);
  EXPECT_EQ(*array("test.arr.bool").at(0).get_if<bool>(), true);
  EXPECT_EQ(*array("test.arr.bool").at(1).get_if<bool>(), false);
  EXPECT_EQ(f->get_string_array("test.arr.string"), (std::vector<std::string>{"a", "", "ccc", "\xc3\xbcn\xc3\xaf"}));
  EXPECT_EQ(*array("test.arr.u64").at(1).get_if<uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(*array("test.arr.i64").at(0).get_if<int64_t>(), INT64_MIN);
  EXPECT_EQ(*array("test.arr.i64").at(1).get_if<int64_t>(), INT64_MAX);
  const auto f64 = f->get_f32_array("test.arr.f64");
  EXPECT_EQ(f64.size(), 2u);
  EXPECT_TRUE(std::signbit(f64[1]));
  EXPECT_EQ(*array("test.arr.f64").at(0).get_if<double>(), 1e-300);

  const auto& nested = array("test.arr.nested");
  ASSERT_EQ(nested.elem_type(), GgufType::Array);
  ASSERT_EQ(nested.size(), 3u);
  const std::vector<std::vector<int32_t>> want = {{1, 2}, {3}, {4, 5, 6}};
  for (size_t i = 0; i < want.size(); ++i) {
    const auto inner = nested.at(i);
    const auto& a = *inner.get_if<GgufArray>();
    ASSERT_EQ(a.size(), want[i].size());
    for (size_t j = 0; j < a.size(); ++j) EXPECT_EQ(a.at(j).as_i64(), want[i][j]);
  }
  EXPECT_EQ(f->find("test.arr.nested")->to_string(), "[[1, 2], [3], [4, 5, 6]]");
  expect_error([&] { nested.at(3); }, {"out of range"});
}

TEST(GgufMetadata, GetterConversionsAndErrorsNameTheKey) {
  auto f = open_small();
  EXPECT_EQ(f->get_u32("test.u8"), 200u);  // integer getters widen
  EXPECT_EQ(f->get_i32("test.i16"), -30000);
  EXPECT_EQ(f->get_u32("missing.key", 7u), 7u);
  EXPECT_FALSE(f->find_u32("missing.key").has_value());
  EXPECT_EQ(f->find_u32("general.alignment"), 64u);
  EXPECT_EQ(f->get_string("missing.key", "dflt"), "dflt");
  EXPECT_EQ(f->find_string("missing.key"), nullptr);
  EXPECT_FALSE(f->find_string_array("missing.key").has_value());
  EXPECT_EQ(f->get_bool("missing.key", true), true);
  EXPECT_EQ(f->get_f32("missing.key", 0.25f), 0.25f);

  expect_error([&] { f->get_u32("missing.key"); }, {"missing metadata key 'missing.key'", "small.gguf"});
  expect_error([&] { f->get_u32("test.string"); }, {"'test.string'", "holds string", "integer"});
  expect_error([&] { f->get_u32("test.i8"); }, {"'test.i8'", "does not fit u32"});
  expect_error([&] { f->get_i32("test.u32"); }, {"'test.u32'", "does not fit i32"});
  expect_error([&] { f->get_u32("test.string", 1u); }, {"'test.string'"});  // a default does not hide a bad type
  expect_error([&] { f->find_i32("test.f32"); }, {"'test.f32'", "holds f32"});
  expect_error([&] { f->get_f32("test.f64"); }, {"'test.f64'", "does not fit f32"});
  expect_error([&] { f->get_bool("test.u8"); }, {"'test.u8'", "holds u8", "bool"});
  expect_error([&] { f->get_string("test.arr.string"); }, {"holds array of string", "string was expected"});
  expect_error([&] { f->get_string_array("test.arr.i32"); }, {"'test.arr.i32'", "holds array of i32"});
  expect_error([&] { f->get_i32_array("test.arr.u32"); }, {"'test.arr.u32'", "does not fit i32"});
  expect_error([&] { f->get_i32_array("test.arr.string"); }, {"'test.arr.string'"});
  expect_error([&] { f->get_f32_array("test.arr.i32"); }, {"'test.arr.i32'", "array of f32"});
  expect_error([&] { f->get_f32_array("test.u8"); }, {"'test.u8'", "array of f32"});
}

TEST(GgufTensors, InfosShapesAndAlignment) {
  auto f = open_small();
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  ASSERT_EQ(f->tensors().size(), 14u);
  struct Want {
    const char* name;
    const char* type;
    std::vector<int64_t> shape;
  };
  const Want want[] = {{"t.f32", "f32", {2, 3, 4}},  {"t.f16", "f16", {4, 16}},      {"t.bf16", "bf16", {2, 32}},
                       {"t.q4_0", "q4_0", {3, 64}},  {"t.q4_1", "q4_1", {3, 64}},    {"t.q8_0", "q8_0", {3, 64}},
                       {"t.q4_k", "q4_k", {2, 512}}, {"t.q6_k", "q6_k", {2, 512}},   {"t.q5_0", "q5_0", {3, 64}},
                       {"t.q5_1", "q5_1", {3, 64}},  {"t.q2_k", "q2_k", {2, 512}},   {"t.q3_k", "q3_k", {2, 512}},
                       {"t.q5_k", "q5_k", {2, 512}}, {"t.iq4_nl", "iq4_nl", {2, 32}}};
  for (size_t i = 0; i < std::size(want); ++i) {
    const auto& info = f->tensors()[i];
    EXPECT_EQ(info.name, want[i].name);
    EXPECT_EQ(info.type_name, want[i].type);
    EXPECT_EQ(info.shape, want[i].shape);
    EXPECT_EQ(info.offset % 64, 0u) << info.name;
    EXPECT_TRUE(f->has_tensor(want[i].name));
  }
  EXPECT_FALSE(f->has_tensor("t.nope"));
  EXPECT_FALSE(f->tensors()[13].dtype.has_value());
  EXPECT_EQ(f->tensors()[13].nbytes, 2u * 18);  // iq4_nl is still sized for bounds checks

  const auto t = f->tensor("t.q4_k");
  EXPECT_EQ(t.dtype, DType::Q4_K);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(t.nbytes(), 2u * 2 * 144);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u);
}

TEST(GgufTensors, UnsupportedTypeOpensButFailsOnAccess) {
  auto f = open_small();
  expect_error([&] { f->tensor("t.iq4_nl"); }, {"'t.iq4_nl'", "iq4_nl", "does not support", "small.gguf"});
  expect_error([&] { f->tensor("t.nope"); }, {"no tensor named 't.nope'"});
}

TEST(GgufTensors, ViewKeepsMappingAlive) {
  Tensor t;
  {
    auto f = open_small();
    t = f->tensor("t.f32");
  }
  const auto want = test::read_bytes(test::fixture_path("gguf/t.f32.f32"));
  ASSERT_EQ(want.size(), t.nbytes());
  EXPECT_EQ(std::memcmp(t.data, want.data(), want.size()), 0);
}

// kestrel::dequantize_row must reproduce gguf.quants.dequantize bit for bit on every tensor type.
TEST(GgufTensors, DequantizeMatchesGgufPackage) {
  auto f = open_small();
  for (const auto& info : f->tensors()) {
    if (!info.dtype) continue;
    SCOPED_TRACE(info.name);
    const auto t = f->tensor(info.name);
    const auto raw = test::read_bytes(test::fixture_path("gguf/" + info.name + ".f32"));
    ASSERT_EQ(raw.size(), static_cast<size_t>(t.numel()) * sizeof(float));
    std::vector<float> want(t.numel()), got(t.numel());
    std::memcpy(want.data(), raw.data(), raw.size());
    for (int64_t r = 0; r < t.rows(); ++r) dequantize_row(t.dtype, t.row(r), got.data() + r * t.cols(), t.cols());
    int mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i)
      if (std::memcmp(&want[i], &got[i], sizeof(float)) != 0 && ++mismatches <= 5)
        ADD_FAILURE() << "element " << i << ": kestrel " << got[i] << " vs gguf " << want[i];
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(GgufDescribe, SummaryListsTypesAndTotals) {
  auto f = open_small();
  const auto s = summarize(*f);
  ASSERT_EQ(s.tensors.size(), 14u);
  uint64_t bytes = 0;
  for (const auto& t : f->tensors()) bytes += t.nbytes;
  EXPECT_EQ(s.total_bytes, bytes);
  EXPECT_EQ(s.per_type.size(), 14u);
  const auto text = format_summary(s, true);
  EXPECT_NE(text.find("GGUF v3"), std::string::npos) << text;
  EXPECT_NE(text.find("t.q6_k"), std::string::npos) << text;
  EXPECT_NE(text.find("[2, 512]"), std::string::npos) << text;
  const auto meta = format_gguf_metadata(*f);
  EXPECT_NE(meta.find("test.arr.string: string[4] = [\"a\", \"\", \"ccc\""), std::string::npos) << meta;
  EXPECT_NE(meta.find("general.alignment: u32 = 64"), std::string::npos) << meta;
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
}

TEST(GgufDefaultModel, OpensWithAllTensorsAndLlamaMetadata) {
  const auto path = test::default_model();
  if (path.empty()) KS_SKIP_OR_FAIL("default model not cached (run scripts/setup.sh)");
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->tensors().size(), 272u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_u32("llama.block_count"), 30u);
  EXPECT_EQ(f->get_u32("llama.embedding_length"), 576u);
  EXPECT_EQ(f->get_f32("llama.rope.freq_base"), 100000.f);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(f->get_i32_array("tokenizer.ggml.token_type").size(), 49152u);
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.merges").size(), 48900u);
  for (const auto& info : f->tensors()) {
    const auto t = f->tensor(info.name);  // every type in this file is supported
    EXPECT_EQ(t.nbytes(), info.nbytes) << info.name;
  }
  const auto emb = f->tensor("token_embd.weight");
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{49152, 576}));
  std::vector<float> row(emb.cols());
  dequantize_row(emb.dtype, emb.row(100), row.data(), emb.cols());
  for (float v : row) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace kestrel
