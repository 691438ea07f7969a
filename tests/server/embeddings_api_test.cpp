// /v1/embeddings request validation (the four input shapes OpenAI accepts, errors naming the parameter)
// and response encoding (floats, base64, dimensions).
#include "server/embeddings_api.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "server/api_error.h"
#include "server/openai_api.h"

namespace kestrel::server {
namespace {

EmbeddingSpec parse(std::string_view body) {
  return parse_embedding_request(parse_json_body(body));
}

// The ApiError a body raises (status 0 when it parses).
ApiError error_of(std::string_view body) {
  try {
    parse(body);
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "no error");
}

TEST(EmbeddingsApi, InputShapes) {
  EmbeddingSpec s = parse(R"({"model": "m", "input": "hello"})");
  EXPECT_EQ(s.model, "m");
  ASSERT_EQ(s.inputs.size(), 1u);
  EXPECT_EQ(s.inputs[0].text, "hello");
  EXPECT_FALSE(s.inputs[0].is_tokens);
  EXPECT_FALSE(s.base64);
  EXPECT_FALSE(s.dimensions);

  s = parse(R"({"input": ["a", "b", "c"]})");
  ASSERT_EQ(s.inputs.size(), 3u);
  EXPECT_EQ(s.inputs[2].text, "c");

  s = parse(R"({"input": [101, 7592, 102]})");
  ASSERT_EQ(s.inputs.size(), 1u);
  EXPECT_TRUE(s.inputs[0].is_tokens);
  EXPECT_EQ(s.inputs[0].ids, (std::vector<int32_t>{101, 7592, 102}));

  s = parse(R"({"input": [[101, 102], [101, 2088, 102]]})");
  ASSERT_EQ(s.inputs.size(), 2u);
  EXPECT_EQ(s.inputs[1].ids, (std::vector<int32_t>{101, 2088, 102}));
}

TEST(EmbeddingsApi, Options) {
  EmbeddingSpec s = parse(R"({"input": "x", "encoding_format": "base64", "dimensions": 64, "user": "u"})");
  EXPECT_TRUE(s.base64);
  EXPECT_EQ(s.dimensions, 64);
  s = parse(R"({"input": "x", "encoding_format": "float", "dimensions": 3.0, "model": null, "user": null})");
  EXPECT_FALSE(s.base64);
  EXPECT_EQ(s.dimensions, 3);
}

TEST(EmbeddingsApi, BadRequestsNameTheParameter) {
  struct Case {
    const char* body;
    const char* param;
    const char* says;
  };
  const Case cases[] = {
      {R"({})", "input", "'input' is required"},
      {R"({"input": null})", "input", "'input' is required"},
      {R"({"input": ""})", "input", "empty string"},
      {R"({"input": []})", "input", "empty list"},
      {R"({"input": ["a", ""]})", "input[1]", "empty string"},
      {R"({"input": [[1, 2], []]})", "input[1]", "empty list"},
      {R"({"input": 5})", "input", "a list of token ids"},
      {R"({"input": {"text": "a"}})", "input", "must be a string"},
      {R"({"input": ["a", 5]})", "input[1]", "not a mix"},
      {R"({"input": [[1], "a"]})", "input[1]", "not a mix"},
      {R"({"input": [1, "a"]})", "input", "token ids"},
      {R"({"input": [-1]})", "input", "token ids"},
      {R"({"input": [1.5]})", "input", "token ids"},
      {R"({"input": [[1, 4294967296]]})", "input[0]", "token ids"},
      {R"({"input": "x", "encoding_format": "int8"})", "encoding_format", "\"float\" or \"base64\""},
      {R"({"input": "x", "encoding_format": 1})", "encoding_format", "\"float\" or \"base64\""},
      {R"({"input": "x", "dimensions": 0})", "dimensions", "between 1 and"},
      {R"({"input": "x", "dimensions": -5})", "dimensions", "between 1 and"},
      {R"({"input": "x", "dimensions": 2.5})", "dimensions", "an integer"},
      {R"({"input": "x", "dimensions": "64"})", "dimensions", "an integer"},
      {R"({"input": "x", "model": 3})", "model", "'model' must be a string"},
      {R"({"input": "x", "user": 3})", "user", "'user' must be a string"},
      {R"({"input": "x", "temperature": 1})", "temperature", "unknown field 'temperature'"},
  };
  for (const Case& c : cases) {
    const ApiError e = error_of(c.body);
    EXPECT_EQ(e.status(), 400) << c.body;
    EXPECT_EQ(e.param(), c.param) << c.body;
    EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << c.body << ": " << e.what();
  }
}

TEST(EmbeddingsApi, TooManyInputs) {
  std::string body = R"({"input": [)";
  for (size_t i = 0; i <= kMaxEmbeddingInputs; ++i) body += i ? ",\"t\"" : "\"t\"";
  body += "]}";
  const ApiError e = error_of(body);
  EXPECT_EQ(e.status(), 400);
  EXPECT_NE(std::string(e.what()).find("at most 2048 inputs"), std::string::npos) << e.what();
}

TEST(EmbeddingsApi, ShortenRenormalizes) {
  std::vector<float> v = {0.6f, 0.8f, 0.f, 0.f};
  shorten_embedding(v, 1, /*normalize=*/true);
  EXPECT_EQ(v, std::vector<float>{1.f});
  v = {3.f, 4.f, 5.f};
  shorten_embedding(v, 2, /*normalize=*/false);
  EXPECT_EQ(v, (std::vector<float>{3.f, 4.f}));
  v = {3.f, 4.f};
  shorten_embedding(v, 2, true);
  EXPECT_FLOAT_EQ(v[0], 0.6f);
  EXPECT_FLOAT_EQ(v[1], 0.8f);
}

TEST(EmbeddingsApi, Base64IsLittleEndianFloat32) {
  // 1.0f is 00 00 80 3f; 0x3f800000 twice and once (padding of one and two bytes).
  EXPECT_EQ(base64_floats(std::vector<float>{1.f}), "AACAPw==");
  EXPECT_EQ(base64_floats(std::vector<float>{1.f, -2.f}), "AACAPwAAAMA=");
  EXPECT_EQ(base64_floats(std::vector<float>{}), "");
  const std::vector<float> three = {0.25f, 1.f, -0.5f};  // 12 bytes: no padding
  EXPECT_EQ(base64_floats(three).size(), 16u);
  EXPECT_EQ(base64_floats(three).find('='), std::string::npos);
}

TEST(EmbeddingsApi, ResponseShape) {
  const std::vector<std::vector<float>> vectors = {{0.5f, -0.25f}, {1.f, 0.1f}};
  const nlohmann::json j = nlohmann::json::parse(embeddings_response(vectors, false, "mini\"lm", 7));
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["model"], "mini\"lm");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  ASSERT_EQ(j["data"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(j["data"][i]["object"], "embedding");
    EXPECT_EQ(j["data"][i]["index"], i);
    const auto got = j["data"][i]["embedding"].get<std::vector<float>>();
    EXPECT_EQ(got, vectors[i]);  // shortest round-tripping floats read back exactly
  }
  const nlohmann::json b = nlohmann::json::parse(embeddings_response(vectors, true, "m", 7));
  EXPECT_EQ(b["data"][0]["embedding"], base64_floats(vectors[0]));
}

}  // namespace
}  // namespace kestrel::server
