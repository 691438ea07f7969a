#include "formats/hf_config.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "core/error.h"
#include "test_files.h"

namespace kestrel {
namespace {

using test::expect_error;

TEST(HfConfig, LoadsJsonFile) {
  test::ScratchDir dir;
  const std::string text = R"({"hidden_size": 576, "rope_scaling": null, "name": "[not {nesting"})";
  test::write_bytes(dir.path("config.json"), text.data(), text.size());
  const auto j = load_json_file(dir.path("config.json"));
  EXPECT_EQ(j["hidden_size"].get<int>(), 576);
  EXPECT_TRUE(j["rope_scaling"].is_null());
  EXPECT_EQ(j["name"], "[not {nesting");
}

TEST(HfConfig, ErrorsNameTheFileAndPosition) {
  test::ScratchDir dir;
  expect_error([&] { load_json_file(dir.path("config.json")); }, {"cannot open", "config.json"});
  const std::string bad = "{\n  \"a\": 1,\n  \"b\": ,\n}";
  test::write_bytes(dir.path("bad.json"), bad.data(), bad.size());
  expect_error([&] { load_json_file(dir.path("bad.json")); }, {"bad.json", "invalid JSON", "line 3"});
  test::write_bytes(dir.path("empty.json"), "", 0);
  expect_error([&] { load_json_file(dir.path("empty.json")); }, {"empty.json", "invalid JSON"});
}

TEST(HfConfig, NestingLimitIgnoresBracketsInStrings) {
  EXPECT_NO_THROW(parse_json(R"({"a": "[[[[[[", "b": [{"c": "\"]]]]"}]})", "test", 3));
  expect_error([&] { parse_json("[[[[1]]]]", "deep.json", 3); }, {"deep.json", "nested deeper than 3"});
  expect_error([&] { parse_json(std::string(100000, '['), "deep.json"); }, {"nested deeper than 256"});
}

TEST(HfConfig, TypedReadsNeitherWrapNorTruncate) {
  const auto j = parse_json(R"({"a": 576, "big": 4294967424, "huge": 18446744073709551615, "neg": -3, "half": 2.5,
                               "whole": 64.0, "s": "7", "tiny": 1e-45, "wide": 1e39})",
                            "config.json");
  EXPECT_EQ(json_int(j["a"], "a", "config.json", 1, 1 << 20), 576);
  EXPECT_EQ(json_int(j["neg"], "neg", "config.json", -5, 5), -3);
  EXPECT_EQ(json_int(j["big"], "big", "config.json", 0, int64_t{1} << 40), 4294967424);
  expect_error([&] { json_int(j["big"], "big", "config.json", 1, INT32_MAX); },
               {"config.json", "'big'", "between 1 and 2147483647", "4294967424"});
  expect_error([&] { json_int(j["huge"], "huge", "f", 1, INT64_MAX); }, {"'huge'", "18446744073709551615"});
  expect_error([&] { json_int(j["neg"], "neg", "f", 1, 10); }, {"'neg'", "-3"});
  expect_error([&] { json_int(j["half"], "half", "f", 1, 10); }, {"'half'", "must be an integer", "2.5"});
  expect_error([&] { json_int(j["whole"], "whole", "f", 1, 100); }, {"'whole'", "must be an integer", "64.0"});
  expect_error([&] { json_int(j["s"], "s", "f", 1, 10); }, {"'s'", "a JSON string"});
  EXPECT_EQ(json_float(j["a"], "a", "f"), 576.f);
  EXPECT_EQ(json_float(j["half"], "half", "f"), 2.5f);
  EXPECT_GE(json_float(j["tiny"], "tiny", "f"), 0.f);  // underflow rounds, it does not fail
  expect_error([&] { json_float(j["wide"], "wide", "f"); }, {"'wide'", "32-bit float"});
  expect_error([&] { json_float(j["s"], "s", "f"); }, {"'s'", "must be a number"});
}

}  // namespace
}  // namespace kestrel
