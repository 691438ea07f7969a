// Tool calling's pieces without a model (server/tool_calls.h): which syntax a template speaks, the forcing
// grammar accepting exactly well-formed calls, parsing answers in each syntax, and the streaming holdback.
#include "server/tool_calls.h"

#include <gtest/gtest.h>

#include "server/api_error.h"
#include "structured/grammar.h"

namespace kestrel::server {
namespace {

using nlohmann::json;

ToolSpec weather_spec() {
  const json body = json::parse(R"({"tools": [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
      "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
      "required": ["city"]}}},
    {"type": "function", "function": {"name": "now"}}]})");
  return *parse_tool_spec(body);
}

TEST(ToolCalls, TemplatesAreRecognisedBySyntax) {
  EXPECT_EQ(detect_tool_template("{% if tools %}<tool_call>{% endif %}").format, ToolFormat::Hermes);
  EXPECT_TRUE(detect_tool_template("{% if tools %}<tool_call>{% endif %}").native);
  EXPECT_EQ(detect_tool_template("[TOOL_CALLS] {{ tools }}").format, ToolFormat::Mistral);
  EXPECT_EQ(detect_tool_template("<|python_tag|>{{ tools }}").format, ToolFormat::Llama3Json);
  const ToolTemplate plain = detect_tool_template("{{ messages }}");
  EXPECT_EQ(plain.format, ToolFormat::Hermes);
  EXPECT_FALSE(plain.native);
}

TEST(ToolCalls, ForcingGrammarAcceptsExactlyWellFormedCalls) {
  ToolSpec spec = weather_spec();
  spec.choice = ToolSpec::Choice::Required;
  auto g = structured::compile_gbnf(tool_call_grammar(spec, ToolFormat::Hermes));
  EXPECT_TRUE(structured::grammar_accepts(
      *g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Oslo\",\"unit\":\"c\"}}\n</tool_call>"));
  EXPECT_TRUE(structured::grammar_accepts(*g,
                                          "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n"
                                          "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"));
  EXPECT_FALSE(structured::grammar_accepts(
      *g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\":\"c\"}}\n</tool_call>"));  // no city
  EXPECT_FALSE(structured::grammar_accepts(*g, "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>"));
  spec.choice = ToolSpec::Choice::Named;
  spec.named = "now";
  spec.parallel = false;
  g = structured::compile_gbnf(tool_call_grammar(spec, ToolFormat::Llama3Json));
  EXPECT_TRUE(structured::grammar_accepts(*g, "{\"name\": \"now\", \"parameters\": {}}"));
  EXPECT_FALSE(structured::grammar_accepts(*g, "{\"name\": \"get_weather\", \"parameters\": {\"city\":\"x\"}}"));
  EXPECT_FALSE(structured::grammar_accepts(
      *g, "{\"name\": \"now\", \"parameters\": {}}; {\"name\": \"now\", \"parameters\": {}}"));
}

TEST(ToolCalls, AnswersParseInEachSyntax) {
  const ToolSpec spec = weather_spec();
  auto a = parse_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n"
      "</tool_call>\n<tool_call>{\"name\": \"now\"}</tool_call>",
      ToolFormat::Hermes, spec);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->content, "Let me check.");
  ASSERT_EQ(a->calls.size(), 2u);
  EXPECT_EQ(a->calls[0].name, "get_weather");
  EXPECT_EQ(a->calls[0].arguments, "{\"city\":\"Oslo\"}");
  EXPECT_EQ(a->calls[1].arguments, "{}");
  a = parse_tool_calls(
      "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"unit\": \"f\", \"city\": \"Rome\"}}",
      ToolFormat::Llama3Json, spec);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->calls[0].arguments, "{\"unit\":\"f\",\"city\":\"Rome\"}");  // the model's order kept
  a = parse_tool_calls("[TOOL_CALLS] [{\"name\": \"now\", \"arguments\": {}}, {\"name\": \"now\", \"arguments\": {}}]",
                       ToolFormat::Mistral, spec);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->calls.size(), 2u);
  // Plain text, unknown functions and broken JSON are content, not calls.
  EXPECT_FALSE(parse_tool_calls("The weather is fine.", ToolFormat::Hermes, spec));
  EXPECT_FALSE(parse_tool_calls("<tool_call>{\"name\": \"rm\"}</tool_call>", ToolFormat::Hermes, spec));
  EXPECT_FALSE(parse_tool_calls("<tool_call>{\"name\": </tool_call>", ToolFormat::Hermes, spec));
  EXPECT_FALSE(parse_tool_calls("{not json", ToolFormat::Llama3Json, spec));
}

TEST(ToolCalls, StreamingHoldsBackOnlyWhatMayBeACall) {
  ToolCallStream s(ToolFormat::Hermes);
  std::string sent;
  for (const char* piece : {"Sure", ", <to", "ol", "_c", "all>\n{\"name\"", ": \"now\"}\n</tool_call>"})
    sent += s.push(piece);
  EXPECT_EQ(sent, "Sure, ");
  EXPECT_EQ(s.held(), "<tool_call>\n{\"name\": \"now\"}\n</tool_call>");
  ToolCallStream t(ToolFormat::Hermes);
  EXPECT_EQ(t.push("a <b"), "a <b");  // "<b" cannot begin "<tool_call>"
  EXPECT_EQ(t.push(" <tool"), " ");
  EXPECT_EQ(t.push("s are fun"), "<tools are fun");
  ToolCallStream j(ToolFormat::Llama3Json);
  EXPECT_EQ(j.push("  "), "");
  EXPECT_EQ(j.push("{\"name\""), "");
  EXPECT_EQ(j.held(), "  {\"name\"");
  ToolCallStream k(ToolFormat::Llama3Json);
  EXPECT_EQ(k.push(" Hello"), " Hello");
}

TEST(ToolCalls, RuleNamesArePrefixedOutsideLiteralsClassesAndBounds) {
  EXPECT_EQ(prefix_gbnf_rules("root ::= a \"root\" [a-z]{1,3} # c\na ::= \"x\"\n", "p-"),
            "p-root ::= p-a \"root\" [a-z]{1,3} \np-a ::= \"x\"\n");
}

TEST(ToolCalls, BadToolFieldsAreRefusedByName) {
  auto param_of = [](const char* body) {
    try {
      parse_tool_spec(json::parse(body));
    } catch (const ApiError& e) {
      return e.param();
    }
    return std::string("none");
  };
  EXPECT_EQ(param_of(R"({"tools": {}})"), "tools");
  EXPECT_EQ(param_of(R"({"tools": [{"type": "function", "function": {"name": ""}}]})"), "tools[0].function.name");
  EXPECT_EQ(param_of(R"({"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]})"),
            "tools[0].function.parameters");
  EXPECT_EQ(param_of(R"({"tool_choice": {"type": "function", "function": {"name": "f"}}})"), "tool_choice");
  EXPECT_EQ(param_of(R"({"tools": [], "tool_choice": "auto"})"), "none");
  EXPECT_FALSE(parse_tool_spec(json::parse(R"({"tools": []})")));
}

}  // namespace
}  // namespace kestrel::server
