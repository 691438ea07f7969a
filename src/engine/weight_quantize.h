// `kestrel quantize --method rtn|gptq|awq`: a float model's block linears (q, k, v, o, gate, up, down; the
// embedding and the output projection stay float, as GPTQ and AWQ leave them) quantized to the grouped
// integer format on the CPU, with the statistics GPTQ and AWQ need observed on calibration text through
// the linear observer (ops::LinearObserver).
//
// Calibration runs layer by layer: pass l feeds every calibration window through the first l + 1 layers
// and gathers, for layer l's four inputs (attention input, attention output, MLP input, the down
// projection's input), H = sum x x^T and sum |x|. GPTQ is sequential, as AutoGPTQ does it: pass l runs
// layers < l already quantized, so each layer's codes compensate the error of the ones before. AWQ, as its
// reference does, sees the float model's activations (its scaling does not change a float layer's output).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/awq.h"
#include "core/gptq.h"
#include "core/int_quant.h"

namespace kestrel {

class Decoder;
namespace ops {
struct Context;
}

enum class WeightQuantMethod : uint8_t { Rtn, Gptq, Awq };

struct WeightQuantOptions {
  WeightQuantMethod method = WeightQuantMethod::Rtn;
  quant::IntQuantSpec spec;  // bits, group, sym
  quant::GptqOptions gptq;
  quant::AwqOptions awq;
  int n_ctx = 512;  // tokens per calibration window
};

struct QuantizedWeights {
  std::map<std::string, quant::IntQuantized> linears;  // by GGUF-style weight name ("blk.0.attn_q.weight")
  // AWQ: the float tensors its scales were folded into (attn_norm and ffn_norm weights, v's bias where o was
  // scaled), by GGUF-style name; the linears above already carry their scaling.
  std::map<std::string, std::vector<float>> folded;
  // AWQ: the scaling each linear's weight got before it was quantized, W' = diag(rows) W diag(columns)
  // (empty: none). The float model computes what the quantized one does with effective_weight in place of W.
  std::map<std::string, std::vector<float>> column_scales, row_scales;

  // The quantized linear `name` as a float weight [n, k] in the float model's coordinates: its dequantized
  // codes with AWQ's scaling undone.
  std::vector<float> effective_weight(const std::string& name) const;
};

// Quantizes `model`'s block linears (host weights, float, never placed: their unfused parts are read).
// `tokens` (calibration, cut into windows of opt.n_ctx) are needed by GPTQ and AWQ, ignored by RTN.
// progress(done, total) counts layers and calibration windows.
QuantizedWeights quantize_weights(const Decoder& model, const ops::Context& ctx, std::span<const int32_t> tokens,
                                  const WeightQuantOptions& opt,
                                  const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace kestrel
