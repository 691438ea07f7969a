// Loading refuses what would otherwise run as a different model than the file describes: config numbers
// that wrap or truncate, and an untied model without its output projection.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "../formats/test_files.h"
#include "formats/gguf.h"
#include "formats/hf_config.h"
#include "model/arch/qwen2.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "test_paths.h"

namespace kestrel {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;
using test::expect_error;

// A copy of a committed model fixture (a directory or a GGUF file) in `dir`.
std::string copy_fixture(const test::ScratchDir& dir, const std::string& name) {
  const fs::path to = dir.dir() / name;
  fs::copy(test::fixture("models/" + name), to, fs::copy_options::recursive);
  return to.string();
}

void write_config(const std::string& model_dir, const json& config) {
  const std::string text = config.dump(2);
  test::write_bytes(model_dir + "/config.json", text.data(), text.size());
}

// Overwrites `n` bytes at `offset` of a file in place.
void patch_file(const std::string& path, uint64_t offset, const void* bytes, size_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
  ASSERT_TRUE(f.good()) << "cannot patch " << path;
}

TEST(ModelValidation, ConfigIntegersAreTypedAndRangeChecked) {
  test::ScratchDir dir;
  const std::string d = copy_fixture(dir, "tiny-llama");
  const json original = load_json_file(d + "/config.json");
  EXPECT_NO_THROW(load_model(d));
  auto load_with = [&](const char* key, const json& value) {
    json j = original;
    j[key] = value;
    write_config(d, j);
    return [d] { load_model(d); };
  };
  // 2^32 + 64 would be read as 64, the fixture's own hidden size, and the model would run.
  expect_error(load_with("hidden_size", (uint64_t{1} << 32) + 64), {"config.json", "'hidden_size'", "4294967360"});
  expect_error(load_with("hidden_size", std::numeric_limits<uint64_t>::max()), {"'hidden_size'", "between 1 and"});
  // 4.5 heads would be read as 4 (the fixture sets head_dim, so nothing else notices); 4.0 is no integer either.
  expect_error(load_with("num_attention_heads", 4.5), {"'num_attention_heads'", "must be an integer", "4.5"});
  expect_error(load_with("num_attention_heads", 4.0), {"'num_attention_heads'", "must be an integer"});
  expect_error(load_with("num_key_value_heads", "2"), {"'num_key_value_heads'", "a JSON string"});
  expect_error(load_with("vocab_size", -320), {"'vocab_size'", "-320"});
  expect_error(load_with("max_position_embeddings", 0), {"'max_position_embeddings'", "between 1 and"});
  expect_error(load_with("rope_theta", 1e39), {"'rope_theta'", "32-bit float"});
  expect_error(load_with("rms_norm_eps", true), {"'rms_norm_eps'", "must be a number"});
  expect_error(load_with("partial_rotary_factor", 1e30), {"'partial_rotary_factor'"});
  json nested = original;
  nested["rope_scaling"]["original_max_position_embeddings"] = 64.5;
  write_config(d, nested);
  expect_error([&] { load_model(d); }, {"'original_max_position_embeddings'", "must be an integer"});
}

TEST(ModelValidation, GgufSizesAboveIntRangeNameTheKey) {
  test::ScratchDir dir;
  const std::string path = copy_fixture(dir, "tiny-llama-f32.gguf");
  // The u32 value follows the key string and its 4-byte type id.
  const std::vector<uint8_t> bytes = test::read_bytes(path);
  const std::string key = "llama.block_count";
  const auto at = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(at, bytes.end());
  const uint32_t big = 0x80000002u;  // a negative int after a plain cast
  patch_file(path, static_cast<uint64_t>(at - bytes.begin()) + key.size() + 4, &big, 4);
  expect_error([&] { load_model(path); }, {"llama.block_count", "2147483650"});
}

TEST(ModelValidation, UntiedHfModelWithoutLmHeadIsAnError) {
  test::ScratchDir dir;
  const std::string d = copy_fixture(dir, "tiny-qwen2");  // tied: its safetensors has no lm_head.weight
  json j = load_json_file(d + "/config.json");
  ASSERT_EQ(j["tie_word_embeddings"], true);
  EXPECT_TRUE(load_model(d)->config().tied_embeddings);
  j["tie_word_embeddings"] = false;
  write_config(d, j);
  expect_error([&] { load_model(d); }, {"no lm_head.weight", "tie_word_embeddings"});
  j.erase("tie_word_embeddings");  // unset means false for qwen2 (transformers' Qwen2Config default)
  write_config(d, j);
  expect_error([&] { load_model(d); }, {"no lm_head.weight", "tie_word_embeddings"});
}

TEST(ModelValidation, GgufWithoutOutputTiesOnlyWhereTheArchitectureAllows) {
  const auto f = GgufFile::open(test::fixture("models/tiny-qwen2-f32.gguf"));
  ASSERT_FALSE(f->has_tensor("output.weight"));
  EXPECT_TRUE(config_from_gguf(*f, arch::kQwen2).tied_embeddings);
  Architecture needs_head = arch::kQwen2;
  needs_head.gguf_output_optional = false;
  expect_error([&] { config_from_gguf(*f, needs_head); }, {"no output.weight", "qwen2"});
  // llama.cpp treats output.weight as optional for every family Kestrel supports (llama, qwen2, qwen3).
  for (const Architecture* a : architectures()) EXPECT_TRUE(a->gguf_output_optional) << a->name;
}

}  // namespace
}  // namespace kestrel
