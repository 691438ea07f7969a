// AWQ (Lin et al., 2024): activation-aware weight quantization. A few input channels carry much larger
// activations than the rest, and their weights matter most; AWQ scales each input channel's weights up by
// s_j = mean|x_j|^alpha before rounding (the input is divided by s where it is produced: the previous
// norm's weight, or the previous linear's rows), which gives the salient channels finer steps. alpha is
// searched on a grid per group of linears that read the same input; then each group's clip ratio is
// searched (a narrower range rounds the bulk of the weights better at the cost of the extremes). Both
// searches minimize the layer-output error on calibration inputs, e^T H e per output channel with
// H = sum of x x^T (gptq.h's accumulate_hessian), which is the squared output error summed over them.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/int_quant.h"

namespace kestrel::quant {

struct AwqOptions {
  int grid = 20;       // alpha in {0, 1/grid, ..., (grid - 1)/grid}
  int clip_grid = 20;  // clip ratios 1, 1 - 0.5/clip_grid, ..., down to 0.5 (AWQ's range)
  bool clip_search = true;
};

// One matrix that reads the shared input: w [n, k] row-major.
struct AwqLinear {
  std::span<const float> w;
  int64_t n;
};

struct AwqScales {
  std::vector<float> s;      // [k]: multiply weight column j by s[j], divide input j by it
  float alpha = 0;           // the grid point chosen
  double loss = 0;           // output error of round to nearest after scaling, summed over the linears
  double loss_unscaled = 0;  // the same without scaling (alpha = 0)
};

// mean_abs_x: [k] mean |x_j| over the calibration inputs; hessian: [k, k] of the same inputs.
AwqScales awq_search_scales(std::span<const AwqLinear> linears, int64_t k, std::span<const float> mean_abs_x,
                            std::span<const double> hessian, const IntQuantSpec& spec, const AwqOptions& opt = {});

// Quantizes w [n, k] (already multiplied by the scales) group by group, each group with the clip ratio
// that minimizes its own output error (e_g^T H_gg e_g) when opt.clip_search, else round to nearest.
// hessian: [k, k] of the inputs as the scaled weights see them (x / s).
IntQuantized awq_quantize(std::span<const float> w, int64_t n, int64_t k, std::span<const double> hessian,
                          const IntQuantSpec& spec, const AwqOptions& opt = {});

}  // namespace kestrel::quant
