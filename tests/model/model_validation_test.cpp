// Loading refuses what would otherwise run as a different model than the file describes: config numbers
// that wrap or truncate, an untied model without its output projection, and NaN/Inf weights (named in
// the error, for HF directories by their file name).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "../formats/test_files.h"
#include "fixture_edits.h"
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
using test::copy_fixture;
using test::expect_error;
using test::patch_file;
using test::safetensors_header;
using test::safetensors_offset;
using test::write_config;

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

// Overwrites the 4-byte scalar value of metadata `key` in a GGUF file (it follows the key string and its
// 4-byte type id).
void patch_gguf_value(const std::string& path, const std::string& key, const void* value4) {
  const std::vector<uint8_t> bytes = test::read_bytes(path);
  const auto at = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
  ASSERT_NE(at, bytes.end()) << key;
  patch_file(path, static_cast<uint64_t>(at - bytes.begin()) + key.size() + 4, value4, 4);
}

TEST(ModelValidation, GgufSizesAboveIntRangeNameTheKey) {
  test::ScratchDir dir;
  const std::string path = copy_fixture(dir, "tiny-llama-f32.gguf");
  const uint32_t big = 0x80000002u;  // a negative int after a plain cast
  patch_gguf_value(path, "llama.block_count", &big);
  expect_error([&] { load_model(path); }, {"llama.block_count", "2147483650"});
}

TEST(ModelValidation, GgufContextAndRopeNumbersAreChecked) {
  test::ScratchDir dir;
  const std::string clean = copy_fixture(dir, "tiny-llama-f32.gguf"), path = dir.path("patched.gguf");
  auto patched = [&](const char* key, const void* value4) {
    fs::copy_file(clean, path, fs::copy_options::overwrite_existing);
    patch_gguf_value(path, key, value4);
    return [&] { load_model(path); };
  };
  // A context length of 0 loaded (as 4096), and so did an infinite RoPE base (a NaN one did not).
  const uint32_t zero = 0;
  expect_error(patched("llama.context_length", &zero), {"context length must be positive, got 0"});
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  expect_error(patched("llama.rope.freq_base", &nan), {"RoPE base", "positive finite"});
  expect_error(patched("llama.rope.freq_base", &inf), {"RoPE base", "positive finite"});
  // rope_freqs.weight (Llama-3.1 scaling as per-pair divisors) is read into the config, not scanned as a
  // weight: a NaN or zero divisor is refused there.
  for (const float bad : {nan, 0.f}) {
    fs::copy_file(clean, path, fs::copy_options::overwrite_existing);
    const auto f = GgufFile::open(path);
    const GgufTensorInfo* t = f->find_tensor("rope_freqs.weight");
    ASSERT_NE(t, nullptr);
    patch_file(path, f->data_offset() + t->offset + 3 * sizeof(float), &bad, sizeof(float));
    expect_error([&] { load_model(path); }, {"RoPE frequency factor", "rope_freqs.weight"});
  }
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

TEST(ModelValidation, NonFiniteWeightsAreNamedAtLoad) {
  test::ScratchDir dir;
  // f32 safetensors: a NaN inside a matrix, an infinity in a norm; the error names the HF tensor.
  const std::string d = copy_fixture(dir, "tiny-llama");
  const std::string st = d + "/model.safetensors";
  const std::vector<uint8_t> clean = test::read_bytes(st);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = -std::numeric_limits<float>::infinity();
  patch_file(st, safetensors_offset(st, "model.layers.1.mlp.up_proj.weight", 4099, 4), &nan, 4);
  expect_error([&] { load_model(d); },
               {"'model.layers.1.mlp.up_proj.weight'", "f32[128, 64]", "NaN or infinite value", "element 4099"});
  test::write_bytes(st, clean);
  patch_file(st, safetensors_offset(st, "model.norm.weight", 63, 4), &inf, 4);
  expect_error([&] { load_model(d); }, {"'model.norm.weight'", "element 63"});

  // Q8_0 GGUF: only the block scales can be non-finite; an f16 infinity in block 3 of a projection.
  const std::string q8 = copy_fixture(dir, "tiny-llama-q8_0.gguf");
  const auto f = GgufFile::open(q8);
  const GgufTensorInfo* t = f->find_tensor("blk.0.attn_k.weight");
  ASSERT_NE(t, nullptr);
  const uint64_t block3 = f->data_offset() + t->offset + 3 * dtype_info(DType::Q8_0).block_bytes;
  const uint16_t f16_inf = 0x7c00;
  patch_file(q8, block3, &f16_inf, 2);
  expect_error([&] { load_model(q8); }, {"'blk.0.attn_k.weight'", "q8_0", "block scale", "element 96"});

  // bf16 shards: a NaN in the second shard's tensors.
  const std::string sharded = copy_fixture(dir, "tiny-llama-bf16-sharded");
  const std::string shard = sharded + "/model-00002-of-00002.safetensors";
  std::string name;
  const json header = safetensors_header(shard).first;
  for (const auto& [k, v] : header.items())
    if (k != "__metadata__" && v.at("shape").size() == 2) name = k;
  ASSERT_FALSE(name.empty());
  const uint16_t bf16_nan = 0x7fc1;
  patch_file(shard, safetensors_offset(shard, name, 10, 2), &bf16_nan, 2);
  expect_error([&] { load_model(sharded); }, {"'" + name + "'", "bf16", "element 10"});
}

}  // namespace
}  // namespace kestrel
