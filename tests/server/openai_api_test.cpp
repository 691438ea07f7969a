// Request validation of the OpenAI routes: accepted shapes, and bad input rejected with 400 and the
// offending parameter named.
#include "server/openai_api.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "server/api_error.h"

namespace kestrel::server {
namespace {

GenerationSpec parse_body(std::string_view body, Endpoint endpoint) {
  return parse_generation_request(parse_json_body(body), endpoint);
}

TEST(ServerApi, CompletionRequestFields) {
  GenerationSpec g = parse_body(
      R"({"model": "m", "prompt": ["hi there"], "max_tokens": 7, "temperature": 0, "top_p": 0.5, "top_k": -1,
          "min_p": 0.1, "seed": -3, "stop": "\n", "stop_token_ids": [2, 3], "logprobs": 2, "stream": true,
          "stream_options": {"include_usage": true}, "presence_penalty": 0.5, "frequency_penalty": -0.5,
          "n": 1, "user": "ignored"})",
      Endpoint::Completions);
  EXPECT_EQ(g.model, "m");
  EXPECT_EQ(g.prompt_text, "hi there");
  EXPECT_FALSE(g.prompt_is_tokens);
  EXPECT_EQ(g.max_tokens, 7);
  EXPECT_EQ(g.sampling.temperature, 0.f);
  EXPECT_EQ(g.sampling.top_p, 0.5f);
  EXPECT_EQ(g.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(g.sampling.min_p, 0.1f);
  EXPECT_TRUE(g.has_seed);
  EXPECT_EQ(g.sampling.seed, static_cast<uint64_t>(-3));
  EXPECT_EQ(g.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(g.stop_token_ids, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(g.logprobs, 2);
  EXPECT_TRUE(g.stream);
  EXPECT_TRUE(g.include_usage);
  EXPECT_FLOAT_EQ(g.sampling.presence_penalty, 0.5f);

  GenerationSpec t = parse_body(R"({"prompt": [1, 2, 3]})", Endpoint::Completions);
  EXPECT_TRUE(t.prompt_is_tokens);
  EXPECT_EQ(t.prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_FALSE(t.max_tokens.has_value());
  EXPECT_EQ(t.sampling.temperature, 1.f);  // OpenAI's default
  EXPECT_EQ(t.logprobs, -1);
}

// The fields beyond sampling: vLLM's min_tokens and include_stop_str_in_output, OpenAI's logit_bias,
// chat_template_kwargs, and the harmless ones accepted for what they are (docs/server.md).
TEST(ServerApi, ExtensionAndHarmlessFields) {
  GenerationSpec g = parse_body(
      R"({"prompt": "x", "max_tokens": 9, "min_tokens": 4, "include_stop_str_in_output": true,
          "logit_bias": {"17": -100, "3": 2.5}, "typical_p": 1, "user": "u1", "metadata": {"k": "v"},
          "store": false, "service_tier": "auto", "grammar": null})",
      Endpoint::Completions);
  EXPECT_EQ(g.sampling.min_tokens, 4);
  EXPECT_TRUE(g.include_stop_str);
  std::vector<std::pair<int32_t, float>> bias = g.sampling.logit_bias;
  std::sort(bias.begin(), bias.end());
  EXPECT_EQ(bias, (std::vector<std::pair<int32_t, float>>{{3, 2.5f}, {17, -100.f}}));
  GenerationSpec c = parse_body(
      R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"enable_thinking": false},
          "tool_choice": "none", "parallel_tool_calls": true, "tools": []})",
      Endpoint::Chat);
  EXPECT_EQ(c.template_kwargs, nlohmann::json({{"enable_thinking", false}}));
  try {
    parse_body(R"({"prompt": "x", "frobnicate": 1})", Endpoint::Completions);
    ADD_FAILURE() << "an unknown field was accepted";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.code(), "unknown_parameter");
    EXPECT_NE(std::string(e.what()).find("frobnicate"), std::string::npos);
  }
}

// Sampling fields a body leaves out take the server's defaults; those it sends win.
TEST(ServerApi, AbsentSamplingFieldsTakeTheServersDefaults) {
  const SamplingParams defaults{
      .temperature = 0.3f, .top_k = 7, .top_p = 0.9f, .min_p = 0.02f, .repetition_penalty = 1.1f, .seed = 99};
  GenerationSpec g =
      parse_generation_request(parse_json_body(R"({"prompt": "x", "top_k": -1})"), Endpoint::Completions, defaults);
  EXPECT_EQ(g.sampling.temperature, 0.3f);
  EXPECT_EQ(g.sampling.top_k, 0);  // sent: off
  EXPECT_EQ(g.sampling.top_p, 0.9f);
  EXPECT_EQ(g.sampling.min_p, 0.02f);
  EXPECT_EQ(g.sampling.repetition_penalty, 1.1f);
  EXPECT_FALSE(g.has_seed);  // a server default seed would make every request the same
  EXPECT_EQ(g.sampling.seed, 0u);
}

TEST(ServerApi, ChatRequestFields) {
  GenerationSpec g = parse_body(
      R"({"messages": [{"role": "developer", "content": "be brief"},
                       {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                       {"role": "assistant", "content": null}],
          "max_completion_tokens": 5, "logprobs": true, "top_logprobs": 3})",
      Endpoint::Chat);
  ASSERT_EQ(g.messages.size(), 3u);
  EXPECT_EQ(g.messages[0]["role"], "system");
  EXPECT_EQ(g.messages[1]["content"], "ab");
  EXPECT_EQ(g.messages[2]["content"], "");
  EXPECT_EQ(g.max_tokens, 5);
  EXPECT_EQ(g.logprobs, 3);
}

TEST(ServerApi, BadInputNamesTheParameter) {
  struct Case {
    const char* body;
    Endpoint ep;
    const char* param;
  };
  const Case cases[] = {
      {"{not json", Endpoint::Chat, ""},
      {"[1, 2]", Endpoint::Chat, ""},
      {"{\"prompt\": \"\xff\xfe\"}", Endpoint::Completions, ""},  // invalid UTF-8
      {R"({"prompt": "x", "model": 3})", Endpoint::Completions, "model"},
      {R"({"prompt": "x", "max_tokens": -1})", Endpoint::Completions, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 0})", Endpoint::Completions, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 1e300})", Endpoint::Completions, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 99999999999999999999})", Endpoint::Completions, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": "10"})", Endpoint::Completions, "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 2.5})", Endpoint::Completions, "max_tokens"},
      {R"({"prompt": "x", "temperature": "hot"})", Endpoint::Completions, "temperature"},
      {R"({"prompt": "x", "temperature": 3})", Endpoint::Completions, "temperature"},
      {R"({"prompt": "x", "top_p": 0})", Endpoint::Completions, "top_p"},
      {R"({"prompt": "x", "n": 2})", Endpoint::Completions, "n"},
      {R"({"prompt": "x", "stop": [1]})", Endpoint::Completions, "stop"},
      {R"({"prompt": "x", "stop": [""]})", Endpoint::Completions, "stop"},
      {R"({"prompt": "x", "stream": "yes"})", Endpoint::Completions, "stream"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", Endpoint::Completions, "stream_options"},
      {R"({"prompt": "x", "logprobs": 21})", Endpoint::Completions, "logprobs"},
      {R"({"prompt": "x", "echo": true})", Endpoint::Completions, "echo"},
      {R"({"prompt": "x", "logit_bias": {"a": 5}})", Endpoint::Completions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"-1": 5}})", Endpoint::Completions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": {"1": 101}})", Endpoint::Completions, "logit_bias"},
      {R"({"prompt": "x", "logit_bias": [1]})", Endpoint::Completions, "logit_bias"},
      {R"({"prompt": "x", "min_tokens": -1})", Endpoint::Completions, "min_tokens"},
      {R"({"prompt": "x", "max_tokens": 2, "min_tokens": 3})", Endpoint::Completions, "min_tokens"},
      {R"({"prompt": "x", "include_stop_str_in_output": 1})", Endpoint::Completions, "include_stop_str_in_output"},
      {R"({"prompt": "x", "typical_p": 0.9})", Endpoint::Completions, "typical_p"},
      {R"({"prompt": "x", "prompt_logprobs": 1})", Endpoint::Completions, "prompt_logprobs"},
      {R"({"prompt": "x", "store": true})", Endpoint::Completions, "store"},
      {R"({"prompt": "x", "service_tier": "flex"})", Endpoint::Completions, "service_tier"},
      {R"({"prompt": "x", "user": 5})", Endpoint::Completions, "user"},
      {R"({"prompt": "x", "grammar": ""})", Endpoint::Completions, "grammar"},
      {R"({"prompt": "x", "guided_json": 3})", Endpoint::Completions, "guided_json"},
      {R"({"prompt": "x", "guided_choice": []})", Endpoint::Completions, "guided_choice"},
      {R"({"prompt": "x", "structured_outputs": {"json": "not json"}})", Endpoint::Completions,
       "structured_outputs.json"},
      {R"({"prompt": "x", "structured_outputs": {"structural_tag": {}}})", Endpoint::Completions,
       "structured_outputs.structural_tag"},
      {R"({"prompt": "x", "json_schema": "nope"})", Endpoint::Completions, "json_schema"},
      {R"({"prompt": "x", "regex": "a", "guided_choice": ["a"]})", Endpoint::Completions, "guided_choice"},
      {R"({"prompt": "x", "guided_whitespace_pattern": " "})", Endpoint::Completions, "guided_whitespace_pattern"},
      {R"({"prompt": "x", "frobnicate": true})", Endpoint::Completions, "frobnicate"},
      {R"({"prompt": "x", "messages": []})", Endpoint::Completions, "messages"},
      {R"({"prompt": "x", "chat_template_kwargs": {}})", Endpoint::Completions, "chat_template_kwargs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "echo": true})", Endpoint::Chat, "echo"},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": 1})", Endpoint::Chat,
       "chat_template_kwargs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "chat_template_kwargs": {"messages": []}})", Endpoint::Chat,
       "chat_template_kwargs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", Endpoint::Chat, "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]})", Endpoint::Chat,
       "functions"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}})", Endpoint::Chat,
       "response_format"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}})",
       Endpoint::Chat, "response_format"},
      {R"({"prompt": "x", "stop_token_ids": [-1]})", Endpoint::Completions, "stop_token_ids"},
      {R"({"prompt": ""})", Endpoint::Completions, "prompt"},
      {R"({"prompt": []})", Endpoint::Completions, "prompt"},
      {R"({"prompt": ["a", "b"]})", Endpoint::Completions, "prompt"},
      {R"({"prompt": [1, -2]})", Endpoint::Completions, "prompt"},
      {R"({"prompt": {"a": 1}})", Endpoint::Completions, "prompt"},
      {R"({})", Endpoint::Completions, "prompt"},
      {R"({"messages": []})", Endpoint::Chat, "messages"},
      {R"({"messages": "hi"})", Endpoint::Chat, "messages"},
      {R"({"messages": [{"role": "user"}]})", Endpoint::Chat, "messages[0].content"},
      {R"({"messages": [{"role": "wizard", "content": "x"}]})", Endpoint::Chat, "messages[0].role"},
      {R"({"messages": [{"role": "user", "content": 5}]})", Endpoint::Chat, "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", Endpoint::Chat,
       "messages[0].content"},
      {R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", Endpoint::Chat, "top_logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 1})", Endpoint::Chat, "logprobs"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", Endpoint::Chat,
       "tools[0]"},
      {R"({"prompt": "x", "tools": []})", Endpoint::Completions, "tools"},
  };
  for (const Case& c : cases) {
    try {
      parse_body(c.body, c.ep);
      ADD_FAILURE() << "accepted: " << c.body;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400) << c.body;
      EXPECT_EQ(e.param(), c.param) << c.body << ": " << e.what();
    }
  }
}

// A number beyond a double's range stops the JSON parser; the error still names the field.
TEST(ServerApi, NumbersBeyondADoubleNameTheirField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"prompt": "x", "temperature": 1e400})", "temperature"},
      {R"({"prompt": "x", "max_tokens": -1e400})", "max_tokens"},
      {R"({"prompt": [1, 1e400]})", "prompt"},
      {R"({"a": {"b": 1}, "stream_options": {"include_usage": 1e999}})", "stream_options.include_usage"},
      {R"([1e400])", ""},
  };
  for (const auto& [body, param] : cases) {
    try {
      parse_json_body(body);
      ADD_FAILURE() << "accepted: " << body;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400) << body;
      EXPECT_EQ(e.param(), param) << body << ": " << e.what();
      EXPECT_EQ(e.code(), "invalid_value") << body;
    }
  }
}

TEST(ServerApi, TokenIdsAreCheckedBeforeNarrowing) {
  EXPECT_EQ(parse_token_ids(nlohmann::json::parse("[0, 7, 2147483647]"), "tokens"),
            (std::vector<int32_t>{0, 7, 2147483647}));
  for (const char* bad : {"[4294967297]", "[2147483648]", "[-1]", "[18446744073709551615]", "[9223372036854775808]",
                          "[1.0]", "[\"1\"]", "[null]"}) {
    try {
      parse_token_ids(nlohmann::json::parse(bad), "tokens");
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.param(), "tokens") << bad;
    }
  }
}

TEST(ServerApi, ErrorBodyShape) {
  const auto j = nlohmann::json::parse(error_body(404, "no such model", "model", "model_not_found"));
  EXPECT_EQ(j["error"]["message"], "no such model");
  EXPECT_EQ(j["error"]["type"], "not_found_error");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  const auto k = nlohmann::json::parse(error_body(400, "bad \xff byte"));
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_EQ(k["error"]["type"], "invalid_request_error");
}

}  // namespace
}  // namespace kestrel::server

namespace kestrel::server {
namespace {

// Every structured-output spelling lands in one constraint of the right kind; the schema keeps its key order
// when the body's text is given.
TEST(ServerApi, StructuredOutputSpellingsBecomeOneConstraint) {
  struct Case {
    const char* body;
    ConstraintKind kind;
    const char* field;
  };
  const Case cases[] = {
      {R"({"prompt": "x", "grammar": "root ::= \"a\""})", ConstraintKind::Grammar, "grammar"},
      {R"({"prompt": "x", "guided_grammar": "root ::= \"a\""})", ConstraintKind::Grammar, "guided_grammar"},
      {R"({"prompt": "x", "json_schema": {"type": "object"}})", ConstraintKind::JsonSchema, "json_schema"},
      {R"({"prompt": "x", "guided_json": "{\"type\": \"integer\"}"})", ConstraintKind::JsonSchema, "guided_json"},
      {R"({"prompt": "x", "regex": "[0-9]+"})", ConstraintKind::Regex, "regex"},
      {R"({"prompt": "x", "guided_regex": "[0-9]+"})", ConstraintKind::Regex, "guided_regex"},
      {R"({"prompt": "x", "guided_choice": ["a", "b"]})", ConstraintKind::Choice, "guided_choice"},
      {R"({"prompt": "x", "structured_outputs": {"choice": ["a"]}})", ConstraintKind::Choice,
       "structured_outputs.choice"},
      {R"({"prompt": "x", "structured_outputs": {"json_object": true}})", ConstraintKind::JsonObject,
       "structured_outputs.json_object"},
      {R"({"prompt": "x", "response_format": {"type": "json_object"}})", ConstraintKind::JsonObject, "response_format"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}})",
       ConstraintKind::JsonSchema, "response_format"},
  };
  for (const Case& c : cases) {
    const GenerationSpec g = parse_generation_request(parse_json_body(c.body), Endpoint::Completions);
    ASSERT_TRUE(g.constraint) << c.body;
    EXPECT_EQ(g.constraint->kind, c.kind) << c.body;
    EXPECT_EQ(g.constraint_field, c.field) << c.body;
  }
  EXPECT_FALSE(parse_generation_request(parse_json_body(R"({"prompt": "x", "response_format": {"type": "text"}})"),
                                        Endpoint::Completions)
                   .constraint);
  const std::string raw = R"({"prompt": "x", "json_schema": {"properties": {"z": {}, "a": {}}, "type": "object"}})";
  const GenerationSpec g = parse_generation_request(parse_json_body(raw), Endpoint::Completions, {}, raw);
  EXPECT_EQ(g.constraint->text, R"({"properties":{"z":{},"a":{}},"type":"object"})");
}

}  // namespace
}  // namespace kestrel::server
