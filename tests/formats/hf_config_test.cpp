#include "formats/hf_config.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace kestrel
