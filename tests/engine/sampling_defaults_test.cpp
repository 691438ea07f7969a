// The one sampling policy of run, chat and serve (engine/sampling_defaults.h): a model's
// generation_config.json as vLLM reads it, else llama.cpp's defaults.
#include "engine/sampling_defaults.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace kestrel {
namespace {

TEST(SamplingDefaults, LlamaCppsWithoutAGenerationConfig) {
  Model m;
  for (const nlohmann::json& g : {nlohmann::json(), nlohmann::json{{"do_sample", false}, {"eos_token_id", 2}}}) {
    m.generation_config = g;
    const SamplingDefaults d = sampling_defaults(m);
    EXPECT_EQ(d.params.temperature, 0.8f);
    EXPECT_EQ(d.params.top_k, 40);
    EXPECT_EQ(d.params.top_p, 0.95f);
    EXPECT_EQ(d.params.min_p, 0.05f);
    EXPECT_NE(d.source.find("llama.cpp"), std::string::npos);
  }
  EXPECT_EQ(describe_sampling(sampling_defaults(m).params), "temperature 0.8, top_k 40, top_p 0.95, min_p 0.05");
  EXPECT_EQ(describe_sampling({}), "greedy");
}

TEST(SamplingDefaults, TheModelsGenerationConfigWithTheRestOff) {
  Model m;
  m.generation_config = {{"do_sample", true}, {"temperature", 0.6}, {"top_p", 0.9}, {"top_k", -1}};
  const SamplingDefaults d = sampling_defaults(m);
  EXPECT_FLOAT_EQ(d.params.temperature, 0.6f);
  EXPECT_FLOAT_EQ(d.params.top_p, 0.9f);
  EXPECT_EQ(d.params.top_k, 0);
  EXPECT_EQ(d.params.min_p, 0.f);
  EXPECT_EQ(d.params.repetition_penalty, 1.f);
  EXPECT_NE(d.source.find("generation_config.json"), std::string::npos);
  m.generation_config = {{"temperature", "hot"}};
  EXPECT_THROW(sampling_defaults(m), Error);
  m.generation_config = {{"top_p", 3}};
  EXPECT_THROW(sampling_defaults(m), Error);
}

}  // namespace
}  // namespace kestrel
