// Reading a decoder's configuration and weights out of a GGUF file.
#pragma once

#include <memory>

#include "formats/gguf.h"
#include "model/architecture.h"
#include "model/model_config.h"
#include "model/weight_source.h"

namespace kestrel {

class GgufWeights : public WeightSource {
 public:
  explicit GgufWeights(std::shared_ptr<const GgufFile> f) : f_(std::move(f)) {}
  bool has(const std::string& name) const override { return f_->has_tensor(name); }
  Tensor get(const std::string& name) const override { return f_->tensor(name); }

 private:
  std::shared_ptr<const GgufFile> f_;
};

// Hyper-parameters from the "<arch>.*" metadata keys (llama.cpp's names).
ModelConfig config_from_gguf(const GgufFile& f, const Architecture& arch);

}  // namespace kestrel
