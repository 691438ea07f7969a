#include "tokenizer/chat_template/chat_template.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "core/error.h"

namespace kestrel {
namespace {

std::filesystem::path fixture_dir() {
  const char* env = std::getenv("KESTREL_SOURCE_DIR");
  return std::filesystem::path(env ? env : KESTREL_SOURCE_DIR) / "tests" / "fixtures" / "chat_template";
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ChatJson load_json(const std::string& name) {
  return ChatJson::parse(read_file(fixture_dir() / name));
}

// The fixtures pin strftime_now() to 2024-09-17 10:30:00 (a Tuesday).
ChatRenderOptions fixed_now() {
  std::tm t{};
  t.tm_year = 2024 - 1900;
  t.tm_mon = 8;
  t.tm_mday = 17;
  t.tm_hour = 10;
  t.tm_min = 30;
  const std::time_t epoch = timegm(&t);
  gmtime_r(&epoch, &t);  // fills in weekday and day of year
  ChatRenderOptions opts;
  opts.now = t;
  return opts;
}

std::string describe(const ChatJson& c) {
  return c["template"].get<std::string>() + " / " + c["conversation"].get<std::string>() + " / variant '" +
         c["variant"].get<std::string>() +
         "' / add_generation_prompt=" + (c["add_generation_prompt"].get<bool>() ? "true" : "false");
}

// Checks one render against a fixture entry: byte-equal output, or an error (exactly the template's
// message when it came from raise_exception).
template <typename Render>
void check_case(const ChatJson& expected, const std::string& what, Render&& render) {
  if (expected.contains("output")) {
    try {
      EXPECT_EQ(render(), expected["output"].get<std::string>()) << what;
    } catch (const Error& e) {
      ADD_FAILURE() << what << ": unexpected error: " << e.what();
    }
    return;
  }
  try {
    const std::string out = render();
    ADD_FAILURE() << what << ": expected error '" << expected["error"].get<std::string>() << "', rendered:\n" << out;
  } catch (const Error& e) {
    if (expected["raised"].get<bool>()) EXPECT_EQ(std::string(e.what()), expected["error"].get<std::string>()) << what;
  }
}

TEST(ChatTemplateGolden, RealTemplatesMatchJinja2) {
  const ChatJson doc = load_json("expected_templates.json");
  const ChatRenderOptions opts = fixed_now();
  std::map<std::string, ChatTemplate> templates;
  for (const auto& c : doc["cases"]) {
    const std::string name = c["template"].get<std::string>();
    auto it = templates.find(name);
    if (it == templates.end()) {
      it = templates.emplace(name, ChatTemplate::parse(read_file(fixture_dir() / "templates" / (name + ".jinja"))))
               .first;
    }
    const ChatJson& messages = doc["conversations"][c["conversation"].get<std::string>()];
    check_case(c, describe(c), [&] {
      return render_chat(it->second, messages, c["add_generation_prompt"].get<bool>(),
                         c["bos_token"].get<std::string>(), c["eos_token"].get<std::string>(), c["extra"], opts);
    });
  }
  EXPECT_GE(templates.size(), 9u);
}

TEST(ChatTemplateSnippets, ExpressionsAndStatementsMatchJinja2) {
  const ChatJson doc = load_json("expected_snippets.json");
  const ChatRenderOptions opts = fixed_now();
  for (const auto& s : doc["snippets"]) {
    const std::string name = s["name"].get<std::string>();
    if (s.value("syntax", false)) {
      EXPECT_THROW(ChatTemplate::parse(s["source"].get<std::string>()), Error) << name;
      continue;
    }
    check_case(s, name, [&] { return ChatTemplate::parse(s["source"].get<std::string>()).render(s["context"], opts); });
  }
}

TEST(ChatTemplateApi, SyntaxErrorsCarryLineAndColumn) {
  try {
    ChatTemplate::parse("line one\n{% if x %}\n  {{ 1 + }}\n{% endif %}");
    FAIL() << "expected a syntax error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 3, column 10"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ChatTemplate::parse("{{ 'unterminated }}"), Error);
  EXPECT_THROW(ChatTemplate::parse("{# never closed"), Error);
  EXPECT_THROW(ChatTemplate::parse("{% for x in y %}"), Error);
  EXPECT_THROW(ChatTemplate::parse("{% endfor %}"), Error);
  EXPECT_THROW(ChatTemplate::parse("{% break %}"), Error);
  EXPECT_THROW(ChatTemplate::parse("{{ x ]] }}"), Error);
}

TEST(ChatTemplateApi, RaiseExceptionMessageIsExact) {
  const ChatTemplate t =
      ChatTemplate::parse("{% if messages | length == 0 %}{{ raise_exception('No messages!') }}{% endif %}ok");
  EXPECT_EQ(render_chat(t, nlohmann::json::array({{{"role", "user"}, {"content", "x"}}}), false, "", ""), "ok");
  try {
    render_chat(t, nlohmann::json::array(), false, "", "");
    FAIL() << "expected raise_exception";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "No messages!");
  }
}

TEST(ChatTemplateApi, RuntimeErrorsNameTheLine) {
  const ChatTemplate t = ChatTemplate::parse("a\n{{ messages[0].content.nope.deeper }}");
  try {
    t.render({{"messages", nlohmann::json::array({{{"content", "x"}}})}});
    FAIL() << "expected an undefined error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'str object' has no attribute 'nope'"), std::string::npos) << msg;
  }
}

TEST(ChatTemplateApi, ParsedOnceRenderedManyTimesAcrossThreads) {
  const ChatTemplate t = ChatTemplate::parse(read_file(fixture_dir() / "templates" / "Qwen-Qwen3-0.6B.jinja"));
  const nlohmann::json messages = nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}});
  const std::string expected = render_chat(t, messages, true, "", "<|im_end|>");
  EXPECT_EQ(expected, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int i = 0; i < 50; ++i)
        if (render_chat(t, messages, true, "", "<|im_end|>") != expected) ++mismatches[k];
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(ChatTemplateApi, StrftimeNowUsesInjectedTime) {
  const ChatTemplate t = ChatTemplate::parse("{{ strftime_now('%d %b %Y') }}");
  EXPECT_EQ(t.render(nlohmann::json::object(), fixed_now()), "17 Sep 2024");
  EXPECT_EQ(t.render(nlohmann::json::object()).size(), 11u);  // today, whatever it is
}

TEST(ChatTemplateApi, RejectsBadContext) {
  const ChatTemplate t = ChatTemplate::parse("x");
  EXPECT_THROW(t.render(nlohmann::json::array()), Error);
  EXPECT_THROW(render_chat(t, nlohmann::json::object(), false, "", ""), Error);
}

TEST(ChatTemplateRobustness, LimitsStopRunawayTemplates) {
  EXPECT_THROW(ChatTemplate::parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}"), Error);
  EXPECT_THROW(ChatTemplate::parse("{{ " + std::string(5000, '-') + "1 }}"), Error);
  std::string nested;
  for (int i = 0; i < 1000; ++i) nested += "{% if true %}";
  EXPECT_THROW(ChatTemplate::parse(nested), Error);
  const nlohmann::json empty = nlohmann::json::object();
  EXPECT_THROW(ChatTemplate::parse("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").render(empty), Error);
  EXPECT_THROW(ChatTemplate::parse("{{ range(1000000) | length }}").render(empty), Error);
  EXPECT_THROW(ChatTemplate::parse("{{ 'x' * 1000000000 }}").render(empty), Error);
  EXPECT_THROW(ChatTemplate::parse("{{ 9223372036854775807 + 1 }}").render(empty), Error);
  EXPECT_THROW(ChatTemplate::parse("{{ 99999999999999999999 }}"), Error);
}

// Truncated and byte-flipped real templates must parse or fail with kestrel::Error, never crash
// (this runs under ASan/UBSan in CI).
TEST(ChatTemplateRobustness, MangledTemplatesNeverCrash) {
  const nlohmann::json messages = nlohmann::json::array({{{"role", "system"}, {"content", "s"}},
                                                         {{"role", "user"}, {"content", "u"}},
                                                         {{"role", "assistant"}, {"content", "a"}}});
  const ChatRenderOptions opts = fixed_now();
  size_t parsed = 0, failed = 0;
  auto attempt = [&](const std::string& src) {
    try {
      const ChatTemplate t = ChatTemplate::parse(src);
      ++parsed;
      render_chat(t, messages, true, "<s>", "</s>", nlohmann::json::object(), opts);
    } catch (const Error&) {
      ++failed;
    }
  };
  uint32_t rng = 12345;
  for (const auto& entry : std::filesystem::directory_iterator(fixture_dir() / "templates")) {
    const std::string src = read_file(entry.path());
    for (size_t cut = 0; cut < src.size(); cut += 1 + src.size() / 40) attempt(src.substr(0, cut));
    for (int k = 0; k < 40 && !src.empty(); ++k) {
      std::string flipped = src;
      rng = rng * 1664525u + 1013904223u;
      const size_t pos = rng % flipped.size();
      static constexpr char kChars[] = "{}%#-+()[]'\"|.,:=~ \n\x80\xff";
      flipped[pos] = kChars[(rng >> 16) % (sizeof kChars - 1)];
      attempt(flipped);
    }
  }
  EXPECT_GT(parsed, 0u);
  EXPECT_GT(failed, 0u);
}

}  // namespace
}  // namespace kestrel
