// SKVQ's calibration of a KV cache format for one model (made by kv_calibrate.h's calibrate_kv): per
// layer, an order of each kv head's channels for K and for V that puts channels of similar range into the
// same scale group, and the clip ratio of the group ranges (keys, values) with the least NLL on the
// calibration text. Keys are taken after RoPE, as the cache holds them, so queries need no
// change. Stored as JSON beside the model and picked up by --kv-type skvq*; docs/kv_cache.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/kv_format.h"

namespace kestrel {

struct ModelConfig;

struct KvCalibration {
  int n_layers = 0, n_kv_heads = 0, head_dim = 0;
  int64_t tokens = 0;  // calibration tokens seen
  struct Layer {
    std::vector<int32_t> k_order, v_order;  // [n_kv_heads * head_dim]: each head's channels, grouped order
  };
  std::vector<Layer> layers;
  // Clip ratios per format name (their code limits differ), per layer: {k, v}.
  std::map<std::string, std::vector<std::array<float, 2>>> clips;
};

// Where the calibration of the model at `model_path` lives: FILE.kv-calib.json beside a GGUF file, or
// kestrel-kv-calib.json inside a Hugging Face model directory.
std::string kv_calibration_path(const std::string& model_path);

void save_kv_calibration(const KvCalibration& c, const std::string& path);
// Throws a kestrel::Error naming the file and the problem (not JSON, wrong shape, an order that is not a
// permutation of the head's channels, a clip outside (0, 1]).
KvCalibration load_kv_calibration(const std::string& path);

// The format with its calibration attached for a reordering format: from `calib_path` when given, else
// from beside the model when that file exists (checked against the model's shape), else none (channels
// stay in order with the format's default clip, and a warning says how to calibrate). Other formats are
// returned unchanged.
KvFormat with_kv_calibration(KvFormat f, const ModelConfig& model, const std::string& model_path,
                             const std::string& calib_path = {});

}  // namespace kestrel
