// `kestrel quantize --kv skvq --calib TEXT`: SKVQ's calibration (kv_calibration.h) measured by running the
// model over a text: channel ranges from an f32 cache, then clip ratios by the NLL each candidate gives.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "engine/kv_calibration.h"

namespace kestrel {

class Decoder;
namespace ops {
struct Context;
}

struct KvCalibrationOptions {
  int n_ctx = 2048;              // tokens per window
  int64_t search_tokens = 4096;  // the leading tokens on which each clip candidate's NLL is measured
};

// Calibrates the SKVQ formats on `tokens` (CPU): channel ranges over every position from an f32 cache, in
// windows of n_ctx; then, per format, the key and the value clip ratio with the least NLL on the first
// search_tokens with those orders. progress(done, total) counts windows and candidates.
KvCalibration calibrate_kv(Decoder& model, const ops::Context& ctx, std::span<const int32_t> tokens,
                           const KvCalibrationOptions& opt = {}, const std::function<void(int, int)>& progress = {});

}  // namespace kestrel
