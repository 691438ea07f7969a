// The /v1/embeddings wire format: the request body validated into an EmbeddingSpec (ApiError naming the
// parameter for anything wrong), and the response encoded (float lists or base64, `dimensions` applied).
// No I/O and no model here; `kestrel embed` prints its output with the same encoder.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel::server {

// OpenAI's limit on the inputs of one request.
inline constexpr size_t kMaxEmbeddingInputs = 2048;

// One input: a text, or token ids given by the client (used as the model's input row as they are).
struct EmbeddingInput {
  std::string text;
  std::vector<int32_t> ids;
  bool is_tokens = false;
};

struct EmbeddingSpec {
  std::string model;  // as sent; empty when absent
  std::vector<EmbeddingInput> inputs;
  bool base64 = false;            // encoding_format "base64" (little-endian float32 bytes) rather than "float"
  std::optional<int> dimensions;  // keep the first N dimensions (checked against the model by the server)
};

// Validates a parsed body: "input" as a string, a list of strings, a list of token ids or a list of lists
// of token ids (1 to kMaxEmbeddingInputs inputs, none empty); "model", "encoding_format", "dimensions"
// (>= 1) and "user" (ignored). Throws ApiError (400) naming the offending parameter.
EmbeddingSpec parse_embedding_request(const nlohmann::json& body);

// `dimensions` applied to one embedding: its first n values, rescaled to unit length when `normalize`
// (the model's output is normalized, so the shortened one is too, as OpenAI's is).
void shorten_embedding(std::vector<float>& v, size_t n, bool normalize);

// Little-endian float32 bytes in base64 (what OpenAI's clients decode for encoding_format "base64").
std::string base64_floats(std::span<const float> v);

// The response: {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
// "usage": {"prompt_tokens", "total_tokens"}}. Floats are written in their shortest round-tripping form.
std::string embeddings_response(std::span<const std::vector<float>> vectors, bool base64, std::string_view model,
                                int64_t prompt_tokens);

}  // namespace kestrel::server
