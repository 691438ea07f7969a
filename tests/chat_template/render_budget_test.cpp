// The render budget: templates from model files that loop, grow or nest without bound stop with a
// TemplateBudgetError naming the limit, and real templates on long conversations stay well inside it.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "../common/test_model.h"
#include "engine/chat_format.h"
#include "model/model.h"
#include "tokenizer/chat_template/chat_template.h"

namespace kestrel {
namespace {

const nlohmann::json kEmpty = nlohmann::json::object();

// The message of the budget error `src` renders into (empty when it renders, or fails otherwise).
std::string budget_error(const std::string& src, const RenderLimits& limits = {}) {
  ChatRenderOptions opts;
  opts.limits = limits;
  try {
    ChatTemplate::parse(src).render(kEmpty, opts);
  } catch (const TemplateBudgetError& e) {
    return e.what();
  } catch (const Error& e) {
    ADD_FAILURE() << src << ": not a budget error: " << e.what();
  }
  return "";
}

TEST(ChatTemplateBudget, RunawayTemplatesStopWithABudgetError) {
  // Small limits keep this quick under sanitizers; the defaults are tested below.
  RenderLimits small;
  small.max_steps = 200'000;
  small.max_bytes = 8 << 20;
  const char* runaway[] = {
      // Three loops that each pass the range limit: 10^12 iterations.
      "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}{% endfor %}{% endfor %}"
      "{% endfor %}",
      // Doubling a string, a list, and a list of strings.
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
      "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
      "{% set s = 'x' * 1000000 %}{% set l = [s] * 1000 %}{{ l|join }}",
      // Shared lists that print exponentially.
      "{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{% set c = [b] * 1000 %}{{ c }}",
      "{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{{ b == b }}{{ b|tojson }}{{ b|unique|list }}",
      // Searches that are quadratic in the worst case, and replacements that multiply.
      "{% set s = 'a' * 4000000 %}{{ (s + 'b') in (s * 2) }}",
      "{% set s = 'a' * 100000 %}{{ s.replace('', s)|length }}",
      // Output without end.
      "{% for i in range(100000) %}{% for j in range(100000) %}{{ 'output' }}{% endfor %}{% endfor %}",
      // Values nested through a namespace, and a namespace that holds itself.
      "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}",
      "{% set ns = namespace(a=1) %}{% set ns.a = [ns] %}{{ ns }}",
  };
  for (const char* src : runaway) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string msg = budget_error(src, small);
    EXPECT_NE(msg.find("render budget"), std::string::npos) << src << "\n" << msg;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20) << src;
  }
}

TEST(ChatTemplateBudget, DefaultLimitsStopTheHangingTemplate) {
  const std::string msg = budget_error(
      "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}{% endfor %}{% endfor %}"
      "{% endfor %}");
  EXPECT_NE(msg.find("more than 10000000 steps"), std::string::npos) << msg;
}

TEST(ChatTemplateBudget, EachLimitIsNamed) {
  RenderLimits l;
  l.max_output_bytes = 100;
  EXPECT_NE(budget_error("{{ 'x' * 101 }}", l).find("more than 100 bytes of output"), std::string::npos);
  EXPECT_NE(budget_error("{% for i in range(200) %}x{% endfor %}", l).find("bytes of output"), std::string::npos);
  l = {};
  l.max_string_bytes = 1000;
  EXPECT_NE(budget_error("{% set s = 'x' * 1001 %}", l).find("a string of 1001 bytes"), std::string::npos);
  l = {};
  l.max_list_items = 1000;
  EXPECT_NE(budget_error("{% set l = range(1001)|list %}", l).find("1001 items"), std::string::npos);
  l = {};
  l.max_depth = 20;
  EXPECT_NE(budget_error("{{ " + std::string(30, '[') + "1" + std::string(30, ']') + " }}", l).find("nesting deeper"),
            std::string::npos);
  l = {};
  l.max_steps = 1000;
  EXPECT_NE(budget_error("{% for i in range(100) %}{% endfor %}", l).find("more than 1000 steps"), std::string::npos);
  l = {};
  l.max_bytes = 1 << 20;
  EXPECT_NE(budget_error("{% for i in range(300) %}{% set s = 'x' * 4096 %}{% endfor %}", l).find("bytes of strings"),
            std::string::npos);
  // Within the limits, the same templates render.
  EXPECT_EQ(ChatTemplate::parse("{% for i in range(100) %}{% endfor %}ok").render(kEmpty), "ok");
}

TEST(ChatTemplateBudget, LimitsGrowWithTheConversation) {
  const RenderLimits small = RenderLimits::for_input(1000), big = RenderLimits::for_input(size_t{64} << 20);
  EXPECT_EQ(small.max_steps, RenderLimits{}.max_steps);
  EXPECT_EQ(small.max_output_bytes, RenderLimits{}.max_output_bytes);
  EXPECT_GE(big.max_output_bytes, size_t{256} << 20);
  EXPECT_GE(big.max_string_bytes, size_t{256} << 20);
  EXPECT_GT(big.max_steps, small.max_steps);
}

std::filesystem::path template_dir() {
  const char* env = std::getenv("KESTREL_SOURCE_DIR");
  return std::filesystem::path(env ? env : KESTREL_SOURCE_DIR) / "tests" / "fixtures" / "chat_template" / "templates";
}

// Real templates on a long conversation with a 1 MiB message: far inside the budget, so it never
// refuses honest requests.
TEST(ChatTemplateBudget, RealTemplatesRenderLongConversations) {
  ChatJson messages = ChatJson::array();
  for (int i = 0; i < 200; ++i)
    messages.push_back({{"role", i % 2 ? "assistant" : "user"}, {"content", "Message number " + std::to_string(i)}});
  messages.push_back({{"role", "user"}, {"content", std::string(1 << 20, 'w')}});
  int rendered = 0;
  for (const auto& entry : std::filesystem::directory_iterator(template_dir())) {
    std::ifstream in(entry.path());
    std::stringstream ss;
    ss << in.rdbuf();
    const ChatTemplate t = ChatTemplate::parse(ss.str());
    ChatRenderOptions opts;
    opts.limits = RenderLimits::for_input((1 << 20) + 200 * 40);
    try {
      render_chat(t, messages, true, "<s>", "</s>", ChatJson::object(), opts);
      ++rendered;
    } catch (const TemplateBudgetError& e) {
      ADD_FAILURE() << entry.path().filename() << ": " << e.what();
    } catch (const Error&) {
      // Some templates refuse this conversation's shape (raise_exception); that is not the budget.
    }
  }
  EXPECT_GT(rendered, 10);
}

Model model_with_template(const std::string& tmpl) {
  Model m;
  m.tokenizer = testing::tiny_tokenizer();
  m.chat_template = tmpl;
  return m;
}

TEST(ChatTemplateBudget, FormatterRefusesATemplateThatFailsTheProbe) {
  for (const char* src : {"{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
                          "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                          "{% endfor %}{{ ns.s }}"}) {
    try {
      ChatFormatter f(model_with_template(src));
      ADD_FAILURE() << "accepted " << src;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("probe conversation"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("render budget"), std::string::npos) << e.what();
    }
  }
  // A template that refuses the probe's system turn, or any conversation, is not refused for it.
  ChatFormatter picky(
      model_with_template("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
                          "{% for m in messages %}{{ m['content'] }}{% endfor %}"));
  EXPECT_EQ(picky.render(nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}}), false), "hi");
  ChatFormatter refuses(model_with_template("{{ raise_exception('never') }}"));
  EXPECT_TRUE(refuses.has_template());
}

TEST(ChatTemplateBudget, FormatterBudgetScalesWithTheMessages) {
  // Quadratic in the message length: fine on the probe, over the budget on a long message.
  ChatFormatter f(model_with_template(
      "{% for m in messages %}{% for a in m['content'] %}{% for b in m['content'] %}{% endfor %}{% endfor %}"
      "{{ m['content'] }}{% endfor %}"));
  const auto convo = [](size_t n) {
    return nlohmann::json::array({{{"role", "user"}, {"content", std::string(n, 'a')}}});
  };
  EXPECT_EQ(f.render(convo(10), false), std::string(10, 'a'));
  EXPECT_THROW(f.render(convo(20000), false), TemplateBudgetError);
}

}  // namespace
}  // namespace kestrel
