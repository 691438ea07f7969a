// One sampling policy for everything that leaves a parameter unset — `run`, `chat`, and the server's
// requests: a Hugging Face model's generation_config.json, read as vLLM reads it (temperature, top_p,
// top_k, min_p and repetition_penalty; keys it lacks are off; do_sample is not read, as vLLM does not), else
// llama.cpp's defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05). Command-line flags and request
// fields override it field by field.
#pragma once

#include <string>

#include "engine/sampler.h"
#include "model/model.h"

namespace kestrel {

struct SamplingDefaults {
  SamplingParams params;  // seed 0: callers draw their own
  std::string source;     // where they come from, for logs and --help
};

SamplingDefaults sampling_defaults(const Model& model);

// "temperature 0.8, top_k 40, top_p 0.95, min_p 0.05" (the filters that are on, and greedy as such).
std::string describe_sampling(const SamplingParams& p);

}  // namespace kestrel
