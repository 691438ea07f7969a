// GPTQ (Frantar et al., 2023): quantizes a linear layer's weights one input column at a time, and after
// each column spreads its rounding error over the columns not yet quantized, weighted by the inverse
// Hessian of the layer's reconstruction loss (H = sum of x x^T over calibration inputs), so the layer's
// outputs on data like the calibration set move as little as the codes allow. Columns go in blocks (the
// error of a block reaches the later columns in one matrix product), optionally in act order (columns
// with the largest H_ii first; the groups are then formed in that order and g_idx records them).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/int_quant.h"

namespace kestrel::quant {

struct GptqOptions {
  double damp = 0.01;      // added to H's diagonal, times its mean: keeps the Cholesky factorization stable
  int block = 128;         // columns per lazy-update block (rounded up to whole groups)
  bool act_order = false;  // quantize columns in order of decreasing H_ii (GPTQ's desc_act)
};

// Accumulates H += x^T x for a batch of calibration inputs x [t, k] (row-major), in double.
void accumulate_hessian(std::span<double> hessian, std::span<const float> x, int64_t t, int64_t k);

// w: [n, k] row-major (n outputs, k inputs); hessian: [k, k] from accumulate_hessian. Inputs the
// calibration never saw (H_ii = 0) are quantized as zeros, as in the reference implementation.
IntQuantized quantize_gptq(std::span<const float> w, int64_t n, int64_t k, std::span<const double> hessian,
                           const IntQuantSpec& spec, const GptqOptions& opt = {});

}  // namespace kestrel::quant
