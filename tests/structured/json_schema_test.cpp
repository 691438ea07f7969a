// json_schema_grammar: the produced GBNF compiles, and the grammar accepts JSON texts valid under the schema
// and rejects invalid ones (nested objects, every subset of optional properties, arrays, enums, integer and
// number bounds checked against the arithmetic, strings, patterns, formats, $ref recursion, anyOf, type
// lists); unsupported keywords are refused by name.
#include "structured/json_schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "structured/grammar.h"

namespace kestrel::structured {
namespace {

using ojson = nlohmann::ordered_json;

struct Compiled {
  std::string text;
  std::shared_ptr<const Grammar> g;

  bool accepts(const std::string& s) const { return grammar_accepts(*g, s); }
};

// Declared property order matters, so schemas are parsed as ordered_json.
Compiled compile(const std::string& schema) {
  Compiled c;
  c.text = json_schema_grammar(ojson::parse(schema));
  c.g = compile_gbnf(c.text);
  return c;
}

void expect_accepts(const Compiled& c, std::initializer_list<std::string> texts) {
  for (const auto& t : texts) EXPECT_TRUE(c.accepts(t)) << "should accept: " << t << "\ngrammar:\n" << c.text;
}

void expect_rejects(const Compiled& c, std::initializer_list<std::string> texts) {
  for (const auto& t : texts) EXPECT_FALSE(c.accepts(t)) << "should reject: " << t << "\ngrammar:\n" << c.text;
}

// The message of the kestrel::Error that translating `schema` throws ("" when it does not throw).
std::string error_of(const std::string& schema) {
  try {
    json_schema_grammar(ojson::parse(schema));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(JsonSchema, NestedObjects) {
  auto c = compile(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string"},
      "address": {
        "type": "object",
        "properties": {"street": {"type": "string"}, "zip": {"type": "integer"}},
        "required": ["street", "zip"]
      },
      "tags": {"type": "array", "items": {"type": "string"}}
    },
    "required": ["name", "address", "tags"]
  })");
  expect_accepts(c, {
                        R"({"name":"Bo","address":{"street":"Main St","zip":12345},"tags":[]})",
                        R"({ "name": "Bo", "address": { "street": "x", "zip": -1 }, "tags": ["a", "b"] })",
                        "\n{\n  \"name\": \"Bo\",\n  \"address\": {\n    \"street\": \"x\",\n    \"zip\": 0\n  },\n"
                        "  \"tags\": [\n    \"a\"\n  ]\n}",
                    });
  expect_rejects(c, {
                        R"({"name":"Bo","address":{"street":"Main St"},"tags":[]})",          // zip missing
                        R"({"name":"Bo","address":{"street":"x","zip":"1"},"tags":[]})",      // zip a string
                        R"({"name":"Bo","address":{"street":"x","zip":1,"x":1},"tags":[]})",  // undeclared key
                        R"({"address":{"street":"x","zip":1},"name":"Bo","tags":[]})",        // not declared order
                        R"({"name":"Bo","address":{"street":"x","zip":1},"tags":[],})",       // trailing comma
                        R"({"name":"Bo","address":{"street":"x","zip":1.5},"tags":[]})",
                        R"({"name":"Bo","address":{"street":"x","zip":01},"tags":[]})",
                        "[]",
                    });
}

TEST(JsonSchema, WhitespaceIsBounded) {
  auto c = compile(R"({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})");
  expect_accepts(c, {R"({"a":1})", "{ \"a\" : 1 }", "{\n\t\"a\":\n" + std::string(20, ' ') + "1\n}", " {\"a\":1}"});
  expect_rejects(c, {"{\n" + std::string(21, ' ') + "\"a\":1}", "{\n\n\"a\":1}", "{  \"a\":1}", "{\"a\":1} "});
}

TEST(JsonSchema, PlainJsonOrdersPropertiesByKey) {
  // nlohmann::json keeps keys sorted, so that is the order produced; ordered_json keeps the declared one.
  auto schema = R"({"type":"object","properties":{"b":{"type":"integer"},"a":{"type":"integer"}},
                    "required":["a","b"]})";
  auto sorted = compile_gbnf(json_schema_grammar(nlohmann::json::parse(schema)));
  EXPECT_TRUE(grammar_accepts(*sorted, R"({"a":1,"b":2})"));
  EXPECT_FALSE(grammar_accepts(*sorted, R"({"b":2,"a":1})"));
  auto declared = compile(schema);
  EXPECT_TRUE(declared.accepts(R"({"b":2,"a":1})"));
  EXPECT_FALSE(declared.accepts(R"({"a":1,"b":2})"));
}

// Every subset of the properties, in declared order: accepted exactly when it holds the required ones.
void check_every_subset(const std::vector<std::string>& names, const std::vector<bool>& required) {
  ojson schema = {{"type", "object"}, {"properties", ojson::object()}, {"required", ojson::array()}};
  for (size_t i = 0; i < names.size(); ++i) {
    schema["properties"][names[i]] = {{"type", "integer"}};
    if (required[i]) schema["required"].push_back(names[i]);
  }
  Compiled c;
  c.text = json_schema_grammar(schema);
  c.g = compile_gbnf(c.text);
  for (uint32_t mask = 0; mask < (1u << names.size()); ++mask) {
    std::string text = "{";
    bool valid = true;
    for (size_t i = 0; i < names.size(); ++i) {
      if (!(mask >> i & 1)) {
        valid = valid && !required[i];
        continue;
      }
      if (text.size() > 1) text += ", ";
      text += "\"" + names[i] + "\": " + std::to_string(i);
    }
    text += "}";
    EXPECT_EQ(c.accepts(text), valid) << text << "\n" << c.text;
    // A comma without a member after it is never valid.
    if (text.size() > 2) {
      EXPECT_FALSE(c.accepts(text.substr(0, text.size() - 1) + ",}")) << text;
    }
  }
}

TEST(JsonSchema, OptionalPropertiesEverySubset) {
  check_every_subset({"a", "b", "c", "d"}, {false, false, false, false});
  check_every_subset({"a", "b", "c", "d"}, {true, false, false, false});
  check_every_subset({"a", "b", "c", "d", "e"}, {false, false, true, false, true});
  check_every_subset({"a", "b", "c"}, {false, false, true});
  check_every_subset({"a", "b", "c"}, {true, true, true});
  check_every_subset({"a"}, {false});
}

TEST(JsonSchema, AdditionalProperties) {
  auto any = compile(R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}},
                         "required":["a"],"additionalProperties":true})");
  expect_accepts(any, {R"({"a":1})", R"({"a":1,"b":"x"})", R"({"a":1,"c":[1,{"d":null}]})",
                       R"({"a":1,"b":"x","bb":true,"":1,"\n":2})", R"({"a":1,"a\"b":1,"\\":2})"});
  // An extra member may not reuse a declared key (that would bypass its schema or duplicate it).
  expect_rejects(any, {R"({"a":1,"b":1})", R"({"a":1,"a":"x"})", R"({"c":1})", R"({"a":1,"b":"x","b":"y"})",
                       R"({"a":1,"\u0062":1})"});

  auto typed = compile(R"({"type":"object","properties":{"a":{"type":"integer"}},
                           "additionalProperties":{"type":"integer","minimum":0}})");
  expect_accepts(typed, {"{}", R"({"a":-1})", R"({"a":-1,"x":1,"y":2})", R"({"x":1})"});
  expect_rejects(typed, {R"({"a":-1,"x":-1})", R"({"x":"1"})", R"({"a":1,"a":2})"});

  auto open = compile(R"({"type":"object"})");
  expect_accepts(open, {"{}", R"({"x":[1,2,{"y":"z"}],"w":null})"});
  expect_rejects(open, {"[]", "1"});

  auto closed = compile(R"({"type":"object","additionalProperties":false})");
  expect_accepts(closed, {"{}", "{ }"});
  expect_rejects(closed, {R"({"a":1})"});

  // A required name that is not a property takes additionalProperties' schema.
  auto req = compile(R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a","z"],
                         "additionalProperties":{"type":"boolean"}})");
  expect_accepts(req, {R"({"a":1,"z":true})", R"({"a":1,"z":false,"q":true})"});
  expect_rejects(req, {R"({"a":1})", R"({"a":1,"z":1})"});
}

TEST(JsonSchema, ArraysWithMinAndMaxItems) {
  auto c = compile(R"({"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":4})");
  expect_accepts(c, {"[1,2]", "[1,2,3]", "[1,2,3,4]", "[ 1 , 2 ]", "[\n  1,\n  2\n]"});
  expect_rejects(c, {"[]", "[1]", "[1,2,3,4,5]", "[1,\"a\"]", "[1,2,]", "[,1,2]"});

  auto any = compile(R"({"type":"array"})");
  expect_accepts(any, {"[]", "[1,\"a\",null,[],{}]"});

  auto one = compile(R"({"type":"array","items":{"type":"string"},"minItems":1})");
  expect_accepts(one, {"[\"a\"]", "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]"});
  expect_rejects(one, {"[]"});

  auto at_most = compile(R"({"type":"array","items":{"type":"boolean"},"maxItems":2})");
  expect_accepts(at_most, {"[]", "[true]", "[true,false]"});
  expect_rejects(at_most, {"[true,false,true]"});

  auto tuple = compile(R"({"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":false})");
  expect_accepts(tuple, {"[]", "[\"a\"]", "[\"a\",1]"});
  expect_rejects(tuple, {"[\"a\",1,2]", "[1,\"a\"]", "[1]"});

  auto tuple_rest = compile(R"({"type":"array","prefixItems":[{"type":"string"}],"items":{"type":"integer"},
                                "minItems":2,"maxItems":3})");
  expect_accepts(tuple_rest, {"[\"a\",1]", "[\"a\",1,2]"});
  expect_rejects(tuple_rest, {"[\"a\"]", "[\"a\",1,2,3]", "[\"a\",\"b\"]"});

  // Draft 7's tuple form.
  auto draft7 = compile(R"({"type":"array","items":[{"type":"null"}],"additionalItems":false,"minItems":1})");
  expect_accepts(draft7, {"[null]"});
  expect_rejects(draft7, {"[]", "[null,null]"});
}

TEST(JsonSchema, EnumAndConst) {
  auto c = compile(R"({"enum":["red","green",3,null,true,{"a":[1,"x"]},"say \"hi\""]})");
  expect_accepts(c, {R"("red")", R"("green")", "3", "null", "true", R"({"a":[1,"x"]})", R"("say \"hi\"")"});
  expect_rejects(c, {R"("blue")", "4", "false", R"("Red")", R"({"a":[1]})"});

  auto typed = compile(R"({"type":"string","enum":["a","b",1]})");
  expect_accepts(typed, {R"("a")", R"("b")"});
  expect_rejects(typed, {"1"});

  auto k = compile(R"({"const":"fixed"})");
  expect_accepts(k, {R"("fixed")"});
  expect_rejects(k, {R"("other")"});

  auto nullable_enum = compile(R"({"type":"string","enum":["x"],"nullable":true})");
  expect_accepts(nullable_enum, {R"("x")", "null"});
}

// Integer bounds against arithmetic: values near both bounds and spread over the range.
void check_integer_range(std::optional<int64_t> lo, std::optional<int64_t> hi, bool lo_excl, bool hi_excl) {
  ojson schema = {{"type", "integer"}};
  if (lo) schema[lo_excl ? "exclusiveMinimum" : "minimum"] = *lo;
  if (hi) schema[hi_excl ? "exclusiveMaximum" : "maximum"] = *hi;
  Compiled c;
  c.text = json_schema_grammar(schema);
  c.g = compile_gbnf(c.text);
  auto valid = [&](int64_t v) {
    if (lo && (lo_excl ? v <= *lo : v < *lo)) return false;
    if (hi && (hi_excl ? v >= *hi : v > *hi)) return false;
    return true;
  };
  std::vector<int64_t> probes = {0, 1, -1, 9, 10, 99, 100, 101, 999, 1000, -9, -10, -100, 123456789, -123456789};
  for (auto b : {lo, hi}) {
    if (!b) continue;
    for (int64_t d = -120; d <= 120; ++d) probes.push_back(*b + d);
    for (int64_t m : {10, 100, 1000}) probes.push_back(*b * m);
  }
  std::mt19937_64 rng(static_cast<uint64_t>(lo.value_or(7) * 31 + hi.value_or(11)));
  const int64_t a = lo.value_or(-1'000'000), z = hi.value_or(1'000'000);
  for (int i = 0; i < 300; ++i) probes.push_back(a + static_cast<int64_t>(rng() % static_cast<uint64_t>(z - a + 1)));
  for (int64_t v : probes) {
    EXPECT_EQ(c.accepts(std::to_string(v)), valid(v)) << v << " under " << schema.dump() << "\n" << c.text;
  }
  // Spellings JSON does not have.
  EXPECT_FALSE(c.accepts("01"));
  EXPECT_FALSE(c.accepts("+1"));
  EXPECT_FALSE(c.accepts("1.5"));
}

TEST(JsonSchema, IntegerRanges) {
  check_integer_range(0, std::nullopt, false, false);
  check_integer_range(1, 100, false, false);
  check_integer_range(-5, 5, false, false);
  check_integer_range(0, 1000, true, false);
  check_integer_range(std::nullopt, 0, false, true);
  check_integer_range(-100, -7, false, false);
  check_integer_range(17, 12345, false, false);
  check_integer_range(-1234, 98765, false, false);
  check_integer_range(std::nullopt, -3, false, false);
  check_integer_range(999, 1001, false, false);
  check_integer_range(1990, 2099, false, false);
  check_integer_range(7, 7, false, false);
  check_integer_range(-20, 20, true, true);
  std::mt19937_64 rng(42);
  for (int i = 0; i < 40; ++i) {
    const int64_t scale = std::vector<int64_t>{10, 1000, 100000, 100000000}[i % 4];
    int64_t a = static_cast<int64_t>(rng() % (2 * scale)) - scale;
    int64_t b = a + 1 + static_cast<int64_t>(rng() % (2 * scale));
    check_integer_range(a, b, rng() % 2, rng() % 2 && b > a + 1);
  }
  // Fractional bounds of an integer round inward; draft 4's boolean exclusiveMinimum works.
  auto c = compile(R"({"type":"integer","minimum":0.5,"maximum":3.5})");
  expect_accepts(c, {"1", "3"});
  expect_rejects(c, {"0", "4"});
  auto d4 = compile(R"({"type":"integer","minimum":0,"exclusiveMinimum":true})");
  expect_accepts(d4, {"1"});
  expect_rejects(d4, {"0"});
  auto unbounded = compile(R"({"type":"integer"})");
  expect_accepts(unbounded, {"0", "-0", "-12", "9999999999999999"});
  expect_rejects(unbounded, {"99999999999999999", "1e3", "-"});
}

// Number bounds against arithmetic on the decimal texts.
TEST(JsonSchema, Numbers) {
  auto plain = compile(R"({"type":"number"})");
  expect_accepts(plain, {"0", "-0.25", "1.5e10", "1E+3", "2e-7", "12", "-0"});
  expect_rejects(plain, {"01", "1.", ".5", "+1", "1e", "--1", "1.5.2", "NaN", "Infinity"});

  struct Case {
    const char* schema;
    double lo, hi;
    bool lo_excl, hi_excl;
  };
  const double inf = INFINITY;
  const std::vector<Case> cases = {
      {R"({"type":"number","minimum":0,"maximum":100})", 0, 100, false, false},
      {R"({"type":"number","exclusiveMinimum":0})", 0, inf, true, false},
      {R"({"type":"number","exclusiveMaximum":10})", -inf, 10, false, true},
      {R"({"type":"number","minimum":-5,"maximum":5})", -5, 5, false, false},
      {R"({"type":"number","minimum":-5,"exclusiveMaximum":-2})", -5, -2, false, true},
      {R"({"type":"number","exclusiveMinimum":-3,"exclusiveMaximum":0})", -3, 0, true, true},
      {R"({"type":"number","minimum":1.0,"maximum":1})", 1, 1, false, false},
      {R"({"type":"number","maximum":0})", -inf, 0, false, false},
  };
  const std::vector<std::string> texts = {"0",    "0.0",  "0.5",    "1",       "1.0",    "1.01",  "2",       "-2",
                                          "-2.0", "-2.5", "-3",     "-3.0",    "-3.01",  "-0.5",  "-1",      "-5",
                                          "-5.0", "-5.1", "4.99",   "5",       "5.0",    "5.01",  "6",       "9.99",
                                          "10",   "10.0", "10.5",   "99.9",    "100",    "100.0", "100.000", "100.01",
                                          "101",  "-100", "1234.5", "-0.0001", "0.00001"};
  for (const auto& k : cases) {
    auto c = compile(k.schema);
    for (const auto& t : texts) {
      const double v = std::stod(t);
      const bool valid = (k.lo_excl ? v > k.lo : v >= k.lo) && (k.hi_excl ? v < k.hi : v <= k.hi);
      EXPECT_EQ(c.accepts(t), valid) << t << " under " << k.schema << "\n" << c.text;
    }
  }
  EXPECT_THAT(error_of(R"({"type":"number","minimum":0.5})"), testing::HasSubstr("minimum"));
  EXPECT_THAT(error_of(R"({"type":"number","exclusiveMaximum":2.25})"), testing::HasSubstr("exclusiveMaximum"));
  EXPECT_THAT(error_of(R"({"type":"number","multipleOf":0.5})"), testing::HasSubstr("multipleOf"));
  // A bound no 16-digit number reaches is trivially met.
  auto huge = compile(R"({"type":"number","maximum":1e300})");
  expect_accepts(huge, {"1.5e10", "-3"});
}

TEST(JsonSchema, StringLengths) {
  auto c = compile(R"({"type":"string","minLength":2,"maxLength":4})");
  expect_accepts(
      c, {R"("ab")", R"("abcd")", "\"\xC3\xA9\xE2\x82\xAC\"", R"("\n\u00e9")", R"("a\"")", "\"\xF0\x9F\x98\x80!\""});
  expect_rejects(c, {R"("a")", R"("abcde")", "\"\xC3\xA9\"", R"("")", "ab"});

  auto s = compile(R"({"type":"string"})");
  expect_accepts(s, {R"("")", R"("a b\tc\\d\/e\u0041\uFFFF")"});
  expect_rejects(s, {"\"a\nb\"", R"("a"b")", R"("\x")", R"("\u12")", R"("\ud800")", "\"a\\\"", "\"\x01\""});
}

TEST(JsonSchema, Patterns) {
  auto c = compile(R"({"type":"string","pattern":"^[A-Z]{3}-[0-9]+$"})");
  expect_accepts(c, {R"("ABC-1")", R"("XYZ-0123456789")"});
  expect_rejects(c, {R"("AB-1")", R"("ABC-")", R"("abc-1")", R"("xABC-1")", R"("ABC-1x")", R"("ABCD-1")"});

  // Not anchored: the match may be anywhere in the string.
  auto unanchored = compile(R"({"type":"string","pattern":"[0-9]{3}"})");
  expect_accepts(unanchored, {R"("123")", R"("ab123cd")", R"("x\n999")"});
  expect_rejects(unanchored, {R"("ab12")", R"("")"});

  auto branches = compile(R"({"type":"string","pattern":"^a|b$"})");
  expect_accepts(branches, {R"("a")", R"("axx")", R"("xxb")"});
  expect_rejects(branches, {R"("xax")", R"("bx")"});

  auto prop = compile(R"({"type":"object","properties":{"code":{"type":"string","pattern":"^(ab|cd)+$"}},
                          "required":["code"]})");
  expect_accepts(prop, {R"({"code":"abcd"})"});
  expect_rejects(prop, {R"({"code":"abc"})"});
}

TEST(JsonSchema, Formats) {
  auto date = compile(R"({"type":"string","format":"date"})");
  expect_accepts(date, {R"("2024-02-29")", R"("2023-12-31")", R"("2000-02-29")", R"("1999-04-30")", R"("0001-01-01")"});
  expect_rejects(date, {R"("2023-02-29")", R"("1900-02-29")", R"("2023-13-01")", R"("2023-04-31")", R"("2023-00-10")",
                        R"("2023-1-1")", R"("20230101")", "2023-01-01"});

  auto uuid = compile(R"({"type":"string","format":"uuid"})");
  expect_accepts(uuid, {R"("123e4567-e89b-12d3-a456-426614174000")", R"("123E4567-E89B-12D3-A456-426614174000")"});
  expect_rejects(uuid, {R"("123e4567-e89b-12d3-a456-42661417400")", R"("123e4567e89b12d3a456426614174000")",
                        R"("g23e4567-e89b-12d3-a456-426614174000")"});

  auto dt = compile(R"({"type":"string","format":"date-time"})");
  expect_accepts(dt,
                 {R"("2024-01-02T03:04:05Z")", R"("2024-01-02T23:59:59.123+05:30")", R"("2024-01-02T00:00:00-08:00")"});
  expect_rejects(dt, {R"("2024-01-02 03:04:05Z")", R"("2024-01-02T24:00:00Z")", R"("2024-01-02T03:04:05")"});

  auto email = compile(R"({"type":"string","format":"email"})");
  expect_accepts(email, {R"("a.b+c@example.co.uk")"});
  expect_rejects(email, {R"("a@b")", R"("@example.com")", R"(".a@example.com")"});

  // Unknown formats are annotations.
  auto uri = compile(R"({"type":"string","format":"uri"})");
  expect_accepts(uri, {R"("anything at all")"});
}

TEST(JsonSchema, RefRecursionTree) {
  auto c = compile(R"({
    "$defs": {
      "node": {
        "type": "object",
        "properties": {
          "value": {"type": "integer"},
          "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
        },
        "required": ["value"]
      }
    },
    "$ref": "#/$defs/node"
  })");
  expect_accepts(c, {R"({"value":1})", R"({"value":1,"children":[]})",
                     R"({"value":1,"children":[{"value":2},{"value":3,"children":[{"value":4,"children":[]}]}]})"});
  expect_rejects(c, {R"({"value":1,"children":[{"children":[]}]})", R"({"value":1,"children":[1]})"});

  // "#" and definitions/, through anyOf with null.
  auto list = compile(R"({
    "type": "object",
    "properties": {"name": {"$ref": "#/definitions/name"}, "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
    "required": ["name", "next"],
    "definitions": {"name": {"type": "string", "maxLength": 3}}
  })");
  expect_accepts(list, {R"({"name":"a","next":null})", R"({"name":"a","next":{"name":"bcd","next":null}})"});
  expect_rejects(list, {R"({"name":"a","next":{"name":"bcde","next":null}})", R"({"name":"a"})"});
}

TEST(JsonSchema, AnyOfAndTypeLists) {
  auto c = compile(R"({"anyOf":[{"type":"string","maxLength":3},{"type":"integer","minimum":0}]})");
  expect_accepts(c, {R"("abc")", "5", "0"});
  expect_rejects(c, {R"("abcd")", "-1", "null"});

  auto one_of = compile(R"({"oneOf":[{"type":"boolean"},{"type":"null"}],"description":"x"})");
  expect_accepts(one_of, {"true", "null"});
  expect_rejects(one_of, {"0"});

  auto list = compile(R"({"type":["string","null"]})");
  expect_accepts(list, {R"("x")", "null"});
  expect_rejects(list, {"1", "[]"});

  auto nullable = compile(R"({"type":"integer","nullable":true,"minimum":1})");
  expect_accepts(nullable, {"1", "null"});
  expect_rejects(nullable, {"0", "\"null\""});

  auto any = compile("{}");
  expect_accepts(any, {"1", "null", R"({"a":[true]})", "[]"});
  auto any_true = compile("true");
  expect_accepts(any_true, {"\"s\"", "-1.5"});
}

TEST(JsonSchema, AllOfMergesObjects) {
  auto c = compile(R"({
    "$defs": {"base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
    "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"name": {"type": "string"}}, "required": ["name"]}]
  })");
  expect_accepts(c, {R"({"id":1,"name":"x"})"});
  expect_rejects(c, {R"({"id":1})", R"({"name":"x"})"});

  auto single = compile(R"({"allOf":[{"type":"integer","maximum":3}],"description":"pydantic style"})");
  expect_accepts(single, {"3"});
  expect_rejects(single, {"4"});

  auto ref_sibling = compile(R"({"$defs":{"s":{"type":"string"}},"$ref":"#/$defs/s","title":"t"})");
  expect_accepts(ref_sibling, {R"("x")"});
  EXPECT_THAT(error_of(R"({"allOf":[{"type":"string"},{"type":"integer"}]})"), testing::HasSubstr("allOf"));
}

TEST(JsonSchema, RuleNamesAreSanitized) {
  auto c = compile(R"({"type":"object","properties":{"a b":{"type":"string","minLength":1},
                       "ünï":{"type":"integer","minimum":1},"$x/y":{"type":"array","maxItems":1},
                       "ws":{"type":"integer","maximum":1},"q\"uote":{"type":"boolean"}},
                       "required":["a b","ünï","$x/y","ws","q\"uote"]})");
  for (size_t pos = 0; pos < c.text.size();) {
    size_t eol = c.text.find('\n', pos);
    if (eol == std::string::npos) eol = c.text.size();
    const std::string line = c.text.substr(pos, eol - pos);
    const size_t def = line.find(" ::= ");
    if (def != std::string::npos) {
      for (char ch : line.substr(0, def)) {
        EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-') << line;
      }
    }
    pos = eol + 1;
  }
  expect_accepts(c, {R"({"a b":"x","ünï":1,"$x/y":[],"ws":0,"q\"uote":true})"});
}

TEST(JsonSchema, UnsupportedKeywordsAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"not":{"type":"string"}})", "not"},
      {R"({"type":"string","if":{"minLength":1},"then":{"maxLength":3}})", "if"},
      {R"({"type":"object","patternProperties":{"^x":{"type":"integer"}}})", "patternProperties"},
      {R"({"type":"object","dependentRequired":{"a":["b"]}})", "dependentRequired"},
      {R"({"type":"array","contains":{"type":"integer"}})", "contains"},
      {R"({"type":"array","uniqueItems":true})", "uniqueItems"},
      {R"({"type":"integer","multipleOf":2})", "multipleOf"},
      {R"({"type":"object","properties":{"a":{"type":"integer"}},"minProperties":1})", "minProperties"},
      {R"({"type":"object","maxProperties":3})", "maxProperties"},
      {R"({"type":"object","properties":{"x":{"type":"string","propertyNames":{"maxLength":2}}}})", "propertyNames"},
      {R"({"type":"object","unevaluatedProperties":false})", "unevaluatedProperties"},
      {R"({"type":"integer","anyOf":[{"minimum":1},{"maximum":-1}]})", "anyOf"},
      {R"({"$ref":"https://example.com/schema.json"})", "$ref"},
      {R"({"$ref":"#/$defs/missing"})", "missing"},
      {R"({"type":"string","pattern":"^(a)\\1$"})", "pattern"},
      {R"({"type":"string","pattern":"^a+$","maxLength":3})", "pattern"},
      {R"({"type":"strin"})", "strin"},
      {"false", "false"},
      {R"({"type":"object","properties":{"a":false},"required":["a"]})", "false"},
      {R"({"type":"integer","minimum":5,"maximum":4})", "minimum"},
      {R"({"type":"array","minItems":3,"maxItems":2})", "minItems"},
  };
  for (const auto& [schema, word] : cases) {
    EXPECT_THAT(error_of(schema), testing::HasSubstr(word)) << schema;
  }
  // Trivially met ones and annotations are fine.
  EXPECT_EQ(error_of(R"({"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],
                         "minProperties":1,"maxProperties":1,"title":"t","description":"d","examples":[{"a":1}],
                         "$schema":"https://json-schema.org/draft/2020-12/schema","$comment":"c","default":{},
                         "deprecated":false,"readOnly":true,"x-vendor":1})"),
            "");
  EXPECT_EQ(error_of(R"({"type":"array","uniqueItems":false,"items":{"type":"integer","multipleOf":1}})"), "");
}

TEST(JsonSchema, ObjectGrammar) {
  auto g = compile_gbnf(json_object_grammar());
  EXPECT_TRUE(grammar_accepts(*g, R"({"a":[1,2.5e3,{"b":null,"c":[true,false,"x\ny"]}],"d":{},"e":[],"f":-0.0})"));
  EXPECT_TRUE(grammar_accepts(*g, "{ \"k\" : {\n  \"n\": [ 1 , 2 ]\n} }"));
  EXPECT_TRUE(grammar_accepts(*g, "{}"));
  EXPECT_FALSE(grammar_accepts(*g, "[1,2]"));
  EXPECT_FALSE(grammar_accepts(*g, "\"x\""));
  EXPECT_FALSE(grammar_accepts(*g, "{\"a\":1"));
  EXPECT_FALSE(grammar_accepts(*g, "{\"a\":1,}"));
  EXPECT_FALSE(grammar_accepts(*g, "{a:1}"));
  EXPECT_TRUE(grammar_accepts_prefix(*g, "{\"a\":[1,"));
}

}  // namespace
}  // namespace kestrel::structured
