// safetensors reader against fixtures from scripts/fixtures/formats/make_safetensors_fixtures.py (written
// by the safetensors package) plus hand-made corrupt files. Fixture values are (i - 5) * 0.25 for float
// tensors and (i - 5) for integer tensors, i being the flat row-major index.
#include "formats/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "core/half.h"
#include "formats/describe.h"
#include "test_files.h"

namespace kestrel {
namespace {

using test::expect_error;

float value_as_f32(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::F32: return t.ptr<const float>()[i];
    case DType::F16: return f16_to_f32(t.ptr<const uint16_t>()[i]);
    case DType::BF16: return bf16_to_f32(t.ptr<const uint16_t>()[i]);
    case DType::I32: return static_cast<float>(t.ptr<const int32_t>()[i]);
    case DType::I8: return static_cast<float>(t.ptr<const int8_t>()[i]);
    default: ADD_FAILURE() << "unexpected dtype"; return 0;
  }
}

void expect_ramp(const Tensor& t) {
  const bool is_int = t.dtype == DType::I32 || t.dtype == DType::I8;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float want = is_int ? static_cast<float>(i - 5) : (i - 5) * 0.25f;
    ASSERT_EQ(value_as_f32(t, i), want) << t.describe() << " element " << i;
  }
}

TEST(SafetensorsSingle, ReadsEveryDtypeZeroCopy) {
  auto m = SafetensorsModel::open_dir(test::fixture_path("safetensors/single"));
  EXPECT_EQ(m->names(),
            (std::vector<std::string>{"w.bf16", "w.empty", "w.f16", "w.f32", "w.f64", "w.i32", "w.i8", "w.scalar"}));
  ASSERT_EQ(m->files().size(), 1u);
  EXPECT_EQ(m->files()[0]->metadata().at("format"), "np");
  EXPECT_EQ(m->files()[0]->metadata().at("note"), "kestrel fixture");
  struct Want {
    const char* name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const Want want[] = {{"w.f32", DType::F32, {3, 4}}, {"w.f16", DType::F16, {2, 8}},  {"w.bf16", DType::BF16, {4, 2}},
                       {"w.i32", DType::I32, {5}},    {"w.i8", DType::I8, {2, 3, 2}}, {"w.scalar", DType::F32, {}}};
  for (const auto& w : want) {
    SCOPED_TRACE(w.name);
    ASSERT_TRUE(m->has(w.name));
    const auto t = m->tensor(w.name);
    EXPECT_EQ(t.dtype, w.dtype);
    EXPECT_EQ(t.shape, w.shape);
    EXPECT_EQ(t.nbytes(), m->find(w.name)->nbytes());
    expect_ramp(t);
  }
  const auto empty = m->tensor("w.empty");
  EXPECT_EQ(empty.shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(empty.numel(), 0);
}

TEST(SafetensorsSingle, UnsupportedDtypeAndMissingNameFailOnAccess) {
  auto m = SafetensorsModel::open_file(test::fixture_path("safetensors/single/model.safetensors"));
  EXPECT_EQ(m->find("w.f64")->dtype_name, "F64");
  expect_error([&] { m->tensor("w.f64"); }, {"'w.f64'", "F64", "does not load", "model.safetensors"});
  expect_error([&] { m->tensor("w.nope"); }, {"no tensor named 'w.nope'"});
}

TEST(SafetensorsSharded, IndexJoinsShards) {
  auto m = SafetensorsModel::open_dir(test::fixture_path("safetensors/sharded"));
  EXPECT_EQ(m->files().size(), 2u);
  EXPECT_EQ(m->names(),
            (std::vector<std::string>{"lm_head.weight", "model.embed.weight", "model.layers.0.w", "model.layers.1.w"}));
  EXPECT_EQ(m->tensor("model.layers.0.w").dtype, DType::BF16);
  EXPECT_EQ(m->tensor("model.layers.1.w").shape, (std::vector<int64_t>{3, 2}));
  for (const auto& name : m->names()) expect_ramp(m->tensor(name));
  const auto s = summarize(*m);
  EXPECT_EQ(s.total_bytes, 156u);  // the index's total_size
  EXPECT_NE(format_summary(s, true).find("model.layers.0.w"), std::string::npos);
}

// Builds a safetensors file from a header and data bytes.
std::vector<uint8_t> make_file(std::string_view header, std::vector<uint8_t> data = std::vector<uint8_t>(64)) {
  const uint64_t n = header.size();
  std::vector<uint8_t> b(8 + n + data.size());
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), n);
  if (!data.empty()) std::memcpy(b.data() + 8 + n, data.data(), data.size());
  return b;
}

class SafetensorsBadInput : public ::testing::Test {
 protected:
  std::string write(const std::vector<uint8_t>& bytes, const std::string& name = "bad.safetensors") {
    const auto path = scratch_.path(name);
    test::write_bytes(path, bytes);
    return path;
  }
  void expect_open_error(std::string_view header, std::initializer_list<std::string_view> parts) {
    const auto path = write(make_file(header));
    expect_error([&] { SafetensorsFile::open(path); }, parts);
  }
  test::ScratchDir scratch_;
};

TEST_F(SafetensorsBadInput, FileAndHeaderFraming) {
  expect_error([&] { SafetensorsFile::open(scratch_.path("nope.safetensors")); }, {"cannot open", "nope"});
  expect_error([&] { SafetensorsFile::open(write({1, 2, 3})); }, {"bad.safetensors", "too small"});
  auto past_end = make_file("{}");
  past_end[0] = 100;
  expect_error([&] { SafetensorsFile::open(write(past_end)); }, {"header length 100 runs past the end"});
  auto huge = make_file("{}");
  const uint64_t n = 200'000'000;
  std::memcpy(huge.data(), &n, 8);
  const auto huge_path = write(huge);
  std::filesystem::resize_file(huge_path, n + 8);  // sparse: cheap to make, never read
  expect_error([&] { SafetensorsFile::open(huge_path); }, {"exceeds"});
}

TEST_F(SafetensorsBadInput, MalformedJson) {
  expect_open_error("{\"a\": ", {"invalid JSON", "line 1"});
  expect_open_error("[]", {"not a JSON object"});
  expect_open_error(std::string(100, '[') + std::string(100, ']'), {"nested deeper"});
  expect_open_error(R"({"__metadata__": {"k": 1}})", {"__metadata__ value 'k' is not a string"});
  expect_open_error(R"({"__metadata__": []})", {"__metadata__ is not a JSON object"});
}

TEST_F(SafetensorsBadInput, EntryFields) {
  expect_open_error(R"({"t": 5})", {"'t'", "not a JSON object"});
  expect_open_error(R"({"t": {"shape": [1], "data_offsets": [0, 4]}})", {"'t'", "'dtype'"});
  expect_open_error(R"({"t": {"dtype": "F32", "data_offsets": [0, 4]}})", {"'t'", "'shape'"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [1]}})", {"'t'", "'data_offsets'"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
                    {"'t'", "not a non-negative integer"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", {"'t'", "1.5"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, -4]}})", {"'t'", "data_offsets"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", {"'t'", "data_offsets"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})",
                    {"'t'", "overflows"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 4]}})",
                    {"'t'", "needs"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [0, 18446744073709551615], "data_offsets": [0, 0]}})",
                    {"'t'", "too large"});
}

TEST_F(SafetensorsBadInput, OffsetsAndOverlaps) {
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", {"'t'", "outside"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [32], "data_offsets": [0, 128]}})",
                    {"'t'", "outside the 64 data bytes"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [18446744073709551615, 4]}})",
                    {"'t'", "outside"});
  expect_open_error(R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})",
                    {"'t'", "span 4 bytes", "needs 8"});
  expect_open_error(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                        "b": {"dtype": "I8", "shape": [8], "data_offsets": [12, 20]}})",
                    {"'a' and 'b' overlap"});
  // Unknown dtypes open (bounds still checked) and fail on access.
  auto f = SafetensorsFile::open(write(make_file(R"({"t": {"dtype": "X9", "shape": [3], "data_offsets": [0, 7]}})")));
  expect_error([&] { f->tensor("t"); }, {"'t'", "X9"});
}

TEST_F(SafetensorsBadInput, MisalignedDataIsCopied) {
  std::vector<uint8_t> data(1 + 8);
  const float vals[2] = {1.5f, -2.f};
  std::memcpy(data.data() + 1, vals, 8);
  // The file is mapped page-aligned, so pad the header until the tensor's file offset is not a multiple of 4.
  std::string header = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  while ((8 + header.size() + 1) % 4 == 0) header += ' ';
  auto bytes = make_file(header, data);
  auto f = SafetensorsFile::open(write(bytes));
  const auto t = f->tensor("t");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % alignof(float), 0u);
  EXPECT_EQ(t.ptr<float>()[0], 1.5f);
  EXPECT_EQ(t.ptr<float>()[1], -2.f);
}

class SafetensorsBadDir : public SafetensorsBadInput {
 protected:
  void SetUp() override {
    write(make_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})"), "s1.safetensors");
    write(make_file(R"({"b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})"), "s2.safetensors");
  }
  void expect_index_error(std::string_view index, std::initializer_list<std::string_view> parts) {
    test::write_bytes(scratch_.path("model.safetensors.index.json"), index.data(), index.size());
    expect_error([&] { SafetensorsModel::open_dir(scratch_.dir().string()); }, parts);
  }
};

TEST_F(SafetensorsBadDir, IndexProblems) {
  expect_error([&] { SafetensorsModel::open_dir(scratch_.path("nope")); }, {"is not a directory"});
  expect_error([&] { SafetensorsModel::open_dir(scratch_.dir().string()); }, {"has neither"});
  expect_index_error("{", {"model.safetensors.index.json", "invalid JSON"});
  expect_index_error(R"({"metadata": {}})", {"missing object 'weight_map'"});
  expect_index_error(R"({"weight_map": {}})", {"weight_map is empty"});
  expect_index_error(R"({"weight_map": {"a": 3}})", {"weight_map['a'] is not a string"});
  expect_index_error(R"({"weight_map": {"a": "s9.safetensors"}})", {"lists shard 's9.safetensors'", "not exist"});
  expect_index_error(R"({"weight_map": {"a": "../s1.safetensors"}})", {"leaves the model directory"});
  expect_index_error(R"({"weight_map": {"a": "/etc/passwd"}})", {"not a relative file name"});
  expect_index_error(R"({"weight_map": {"c": "s1.safetensors"}})", {"maps 'c'", "no shard has that tensor"});
  expect_index_error(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "x": "s2.safetensors"}})",
                     {"maps 'b' to 's1.safetensors', but it is in", "s2.safetensors"});
  write(make_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})"), "s3.safetensors");
  expect_index_error(R"({"weight_map": {"a": "s1.safetensors", "b": "s3.safetensors"}})", {"'a' is in both"});
  const std::string_view good = R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})";
  test::write_bytes(scratch_.path("model.safetensors.index.json"), good.data(), good.size());
  EXPECT_EQ(SafetensorsModel::open_dir(scratch_.dir().string())->names(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(SafetensorsBadInput, TruncatedAtEveryPrefix) {
  const auto full = test::read_bytes(test::fixture_path("safetensors/single/model.safetensors"));
  const auto path = scratch_.path("prefix.safetensors");
  for (size_t n = 0; n < full.size(); ++n) {  // the last tensor ends at the last byte, so every prefix fails
    test::write_bytes(path, full.data(), n);
    EXPECT_THROW(SafetensorsFile::open(path), Error) << "prefix of " << n << " bytes";
  }
}

TEST_F(SafetensorsBadInput, FuzzRandomByteFlips) {
  const auto original = test::read_bytes(test::fixture_path("safetensors/single/model.safetensors"));
  const auto path = scratch_.path("flipped.safetensors");
  std::mt19937_64 rng(7);
  const char kJsonBytes[] = "{}[]\":,0123456789- eE.";
  int opened = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bytes = original;
    const int n_mutations = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < n_mutations; ++m) {
      const size_t pos = rng() % bytes.size();
      switch (rng() % 3) {
        case 0: bytes[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: bytes[pos] = static_cast<uint8_t>(rng()); break;
        default: bytes[pos] = static_cast<uint8_t>(kJsonBytes[rng() % (sizeof(kJsonBytes) - 1)]);
      }
    }
    test::write_bytes(path, bytes);
    try {
      auto f = SafetensorsFile::open(path);
      ++opened;
      for (const auto& info : f->tensors()) {
        try {
          const auto t = f->tensor(info.name);
          ASSERT_EQ(t.nbytes(), info.nbytes());
          std::vector<uint8_t> copy(t.nbytes());
          if (!copy.empty()) std::memcpy(copy.data(), t.data, copy.size());
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
    }
  }
  EXPECT_GT(opened, 100);
}

}  // namespace
}  // namespace kestrel
