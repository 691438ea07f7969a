#include "engine/kv_calibration.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "model/model_config.h"

namespace kestrel {
namespace {

namespace fs = std::filesystem;

void check_order(const std::vector<int32_t>& order, int hkv, int d, const std::string& path, int layer) {
  KS_CHECK(order.size() == size_t(hkv) * d, "{}: layer {} has an order of {} channels, the model has {} x {}", path,
           layer, order.size(), hkv, d);
  for (int h = 0; h < hkv; ++h) {
    std::vector<bool> seen(static_cast<size_t>(d), false);
    for (int i = 0; i < d; ++i) {
      const int32_t c = order[size_t(h) * d + i];
      KS_CHECK(c >= 0 && c < d && !seen[c], "{}: layer {} head {}: the channel order is not a permutation of 0..{}",
               path, layer, h, d - 1);
      seen[c] = true;
    }
  }
}

}  // namespace

std::string kv_calibration_path(const std::string& model_path) {
  if (fs::is_directory(model_path)) return (fs::path(model_path) / "kestrel-kv-calib.json").string();
  return model_path + ".kv-calib.json";
}

void save_kv_calibration(const KvCalibration& c, const std::string& path) {
  nlohmann::json j;
  j["kestrel_kv_calibration"] = 1;
  j["n_layers"] = c.n_layers;
  j["n_kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["tokens"] = c.tokens;
  for (const KvCalibration::Layer& l : c.layers)
    j["layers"].push_back({{"k_order", l.k_order}, {"v_order", l.v_order}});
  for (const auto& [name, clips] : c.clips) j["clips"][name] = clips;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    KS_CHECK(out.good(), "cannot write '{}'", tmp);
    out << j.dump(1) << "\n";
    KS_CHECK(out.good(), "cannot write '{}'", tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  KS_CHECK(!ec, "cannot move '{}' to '{}': {}", tmp, path, ec.message());
}

KvCalibration load_kv_calibration(const std::string& path) {
  std::ifstream in(path);
  KS_CHECK(in.good(), "cannot read the KV calibration '{}'", path);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  KS_CHECK(j.is_object() && j.value("kestrel_kv_calibration", 0) == 1,
           "'{}' is not a Kestrel KV calibration (made by `kestrel quantize --kv skvq`)", path);
  KvCalibration c;
  try {
    c.n_layers = j.at("n_layers").get<int>();
    c.n_kv_heads = j.at("n_kv_heads").get<int>();
    c.head_dim = j.at("head_dim").get<int>();
    c.tokens = j.value("tokens", int64_t{0});
    KS_CHECK(c.n_layers > 0 && c.n_layers <= 4096 && c.n_kv_heads > 0 && c.n_kv_heads <= 4096 && c.head_dim > 0 &&
                 c.head_dim <= 512,
             "{}: shape {} layers x {} heads x {} is out of range", path, c.n_layers, c.n_kv_heads, c.head_dim);
    const auto& layers = j.at("layers");
    KS_CHECK(layers.is_array() && layers.size() == size_t(c.n_layers), "{}: expected {} layers", path, c.n_layers);
    for (int l = 0; l < c.n_layers; ++l) {
      KvCalibration::Layer layer{layers[l].at("k_order").get<std::vector<int32_t>>(),
                                 layers[l].at("v_order").get<std::vector<int32_t>>()};
      check_order(layer.k_order, c.n_kv_heads, c.head_dim, path, l);
      check_order(layer.v_order, c.n_kv_heads, c.head_dim, path, l);
      c.layers.push_back(std::move(layer));
    }
    const nlohmann::json all_clips = j.value("clips", nlohmann::json::object());
    KS_CHECK(all_clips.is_object(), "{}: clips must map format names to per-layer ratios", path);
    for (const auto& [name, clips] : all_clips.items()) {
      auto v = clips.get<std::vector<std::array<float, 2>>>();
      KS_CHECK(v.size() == size_t(c.n_layers), "{}: clips of {} have {} layers, expected {}", path, name, v.size(),
               c.n_layers);
      for (const auto& kv : v)
        for (float x : kv) KS_CHECK(x > 0.f && x <= 1.f, "{}: clip ratio {} of {} is outside (0, 1]", path, x, name);
      c.clips[name] = std::move(v);
    }
  } catch (const nlohmann::json::exception& e) {
    KS_FAIL("{}: malformed KV calibration: {}", path, e.what());
  }
  return c;
}

KvFormat with_kv_calibration(KvFormat f, const ModelConfig& model, const std::string& model_path,
                             const std::string& calib_path) {
  if (!f.reorders()) {
    KS_CHECK(calib_path.empty(), "--kv-calib applies to the SKVQ formats (--kv-type skvq...), not {}", f.name);
    return f;
  }
  const std::string path = calib_path.empty() ? kv_calibration_path(model_path) : calib_path;
  if (calib_path.empty() && !fs::exists(path)) {
    log::warn(
        "--kv-type {}: no calibration at {}; channels stay in order and groups clip at {}. Make one with "
        "`kestrel quantize --kv skvq --calib TEXT -m MODEL`",
        f.name, path, f.k_clip);
    return f;
  }
  auto c = std::make_shared<KvCalibration>(load_kv_calibration(path));
  KS_CHECK(c->n_layers == model.n_layers && c->n_kv_heads == model.n_kv_heads && c->head_dim == model.head_dim,
           "{} calibrates {} layers x {} kv heads x {} channels, but the model has {} x {} x {}; calibrate this model "
           "with `kestrel quantize --kv skvq --calib TEXT -m MODEL`",
           path, c->n_layers, c->n_kv_heads, c->head_dim, model.n_layers, model.n_kv_heads, model.head_dim);
  if (!c->clips.contains(f.name)) log::warn("{} has no clip ratios for {}; groups clip at {}", path, f.name, f.k_clip);
  f.calibration = std::move(c);
  return f;
}

}  // namespace kestrel
