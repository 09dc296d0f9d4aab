// The engine construct by construct: every case in
// tests/data/chat_templates/engine_cases.json (one template per construct,
// rendered by the Jinja2 environment transformers uses; see
// make_engine_cases.py) renders to the same text, or fails where Jinja2 fails.
// Then what Python cannot check: strftime_now with a fixed clock, caller
// variables overriding globals, and rendering twice.
#include <gtest/gtest.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "jinja/template.h"

namespace keel::jinja {
namespace {

using json = nlohmann::ordered_json;

std::string render(std::string_view src, const json& vars = json::object(), const RenderOptions& opt = {}) {
  return Template(src, "t").render(vars, opt);
}

TEST(JinjaEngine, MatchesJinja2OnEveryConstruct) {
  const json g =
      json::parse(read_text_file(std::string(KEEL_SOURCE_DIR) + "/tests/data/chat_templates/engine_cases.json"));
  ASSERT_GE(g["cases"].size(), 90u);
  for (const json& c : g["cases"]) {
    const std::string src = c["template"].get<std::string>();
    SCOPED_TRACE(src);
    if (c.contains("expected")) {
      try {
        EXPECT_EQ(render(src, g["variables"]), c["expected"].get<std::string>());
      } catch (const Error& e) {
        ADD_FAILURE() << "threw: " << e.what();
      }
    } else if (c.contains("raised")) {
      try {
        render(src, g["variables"]);
        ADD_FAILURE() << "expected raise_exception";
      } catch (const RaisedError& e) {
        EXPECT_EQ(std::string(e.what()), c["raised"].get<std::string>());
      }
    } else {
      // Jinja2 fails (c["error"] names its exception): keel must fail with a
      // keel::Error that names the template and a line:column.
      try {
        std::string out = render(src, g["variables"]);
        ADD_FAILURE() << "expected an error (Jinja2: " << c["error"] << "), got: " << out;
      } catch (const RaisedError& e) {
        ADD_FAILURE() << "unexpected raise_exception: " << e.what();
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("t:1:", 0), 0u) << e.what();
      }
    }
  }
}

TEST(JinjaEngine, StrftimeNowUsesTheGivenClock) {
  RenderOptions opt;
  opt.now = std::tm{};
  opt.now->tm_year = 2024 - 1900;
  opt.now->tm_mon = 6;  // July
  opt.now->tm_mday = 26;
  opt.now->tm_hour = 9;
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d %H:%M') }}", json::object(), opt),
            "26 Jul 2024 2024-07-26 09:00");
  // Without a fixed clock it formats the current date: check the shape only.
  EXPECT_EQ(render("{{ strftime_now('%Y')|length }}"), "4");
}

TEST(JinjaEngine, CallerVariablesAndGlobals) {
  // Caller variables override the globals (as Jinja's render(**kwargs) does).
  EXPECT_EQ(render("{{ enable_thinking }} {{ bos_token }}{{ range }}",
                   json{{"enable_thinking", false}, {"bos_token", "<s>"}, {"range", "r"}}),
            "False <s>r");
  EXPECT_EQ(render("[{{ missing }}]"), "[]");
  EXPECT_EQ(render("{{ x }}", json{{"x", 18446744073709551615ull}}), "1.8446744073709552e+19");
}

TEST(JinjaEngine, RendersTwiceWithoutLeakingState) {
  Template t("{% set ns = namespace(n=0) %}{% for m in xs %}{% set ns.n = ns.n + m %}{% endfor %}{{ ns.n }}", "t");
  EXPECT_EQ(t.render(json{{"xs", {1, 2, 3}}}), "6");
  EXPECT_EQ(t.render(json{{"xs", {4}}}), "4");
}

TEST(JinjaEngine, OneTemplateRendersOnSeveralThreads) {
  const std::string dir = std::string(KEEL_SOURCE_DIR) + "/tests/data/chat_templates/";
  const json g = json::parse(read_text_file(dir + "goldens.json"));
  const json* tools = nullptr;
  for (const json& c : g["cases"])
    if (c["name"] == "qwen3/tools") tools = &c;
  ASSERT_NE(tools, nullptr);
  const Template t(read_text_file(dir + "templates/qwen3.jinja"), "qwen3");
  std::vector<std::string> out(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < out.size(); ++i)
    threads.emplace_back([&, i] {
      for (int k = 0; k < 20; ++k) out[i] = t.render((*tools)["variables"]);
    });
  for (auto& th : threads) th.join();
  for (const std::string& o : out) EXPECT_EQ(o, (*tools)["expected"].get<std::string>());
}

}  // namespace
}  // namespace keel::jinja
