// Error messages: syntax errors name the template, line and column; unknown
// filters, tests and tags are refused when parsing (as Jinja does, outside
// if blocks); render
// errors name the expression's position; raise_exception passes its message
// through unchanged; hostile templates hit the limits instead of hanging.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "jinja/template.h"

namespace keel::jinja {
namespace {

using json = nlohmann::ordered_json;

// The message of the keel::Error that parsing (and rendering) `src` throws.
std::string error_of(std::string_view src, const json& vars = json::object(), const RenderOptions& opt = {}) {
  try {
    Template(src, "tpl").render(vars, opt);
  } catch (const RaisedError& e) {
    return std::string("raised: ") + e.what();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  EXPECT_EQ(error_of("hello\n  {{ 1 + }}"), "tpl:2:10: unexpected '}}' in an expression");
  EXPECT_EQ(error_of("{% if x %}\nunclosed"), "tpl:2:9: unexpected end of template, expected 'elif'");
  EXPECT_EQ(error_of("ab {{ x "), "tpl:1:4: unclosed expression '{{'");
  EXPECT_EQ(error_of("{% for x in y %}{% endif %}"), "tpl:1:20: unknown tag 'endif'");
  EXPECT_EQ(error_of("{% frobnicate %}"), "tpl:1:4: unknown tag 'frobnicate'");
  EXPECT_EQ(error_of("{% include 'x' %}"), "tpl:1:4: the 'include' tag is not supported by keel's template engine");
  EXPECT_EQ(error_of("{{ 'abc }}"), "tpl:1:4: unterminated string literal");
  EXPECT_EQ(error_of("{{ a ? b }}"), "tpl:1:6: unexpected character '?'");
  EXPECT_EQ(error_of("{# no end"), "tpl:1:1: unclosed comment '{#'");
  EXPECT_EQ(error_of("{% raw %}forever"), "tpl:1:1: unclosed '{% raw %}' (no '{% endraw %}')");
  EXPECT_EQ(error_of("{{ f(a=1, 2) }}"), "tpl:1:11: positional argument after keyword argument");
  EXPECT_EQ(error_of("{% set x %}"), "tpl:1:12: unexpected end of template, expected 'endset'");
  // Columns count characters, not bytes.
  EXPECT_EQ(error_of("☕☕ {{ ) }}"), "tpl:1:7: unexpected ')' in an expression");
}

TEST(JinjaErrors, UnknownFiltersAndTestsFailAtParse) {
  EXPECT_EQ(error_of("line\n{{ x | frobnicate }}"), "tpl:2:8: no filter named 'frobnicate'");
  EXPECT_EQ(error_of("{{ x is frobnicated }}"), "tpl:1:9: no test named 'frobnicated'");
  // An if's own condition is soft too: the error comes when it is evaluated.
  EXPECT_EQ(error_of("{% if x is frobnicated %}{% endif %}"), "tpl:1:9: no test named 'frobnicated'");
  // Even in a loop that never runs.
  EXPECT_EQ(error_of("{% for a in [] %}{{ a|nope }}{% endfor %}"), "tpl:1:23: no filter named 'nope'");
  // Inside an if block (Jinja's soft frame) only when it runs: a template may
  // guard a filter that other engines provide.
  EXPECT_EQ(error_of("{% if false %}{{ x|nope }}{% endif %}"), "no error");
  EXPECT_EQ(error_of("{% if true %}{{ x|nope }}{% endif %}"), "tpl:1:19: no filter named 'nope'");
  EXPECT_EQ(error_of("{{ xs|map('nope')|list }}", json{{"xs", {1}}}), "tpl:1:7: no filter named 'nope'");
}

TEST(JinjaErrors, RenderErrorsNameTheExpression) {
  EXPECT_EQ(error_of("ok\n  {{ message.content }}"), "tpl:2:6: 'message' is undefined");
  EXPECT_EQ(error_of("{{ m.a.b }}", json{{"m", json::object()}}), "tpl:1:5: 'dict object' has no attribute 'a'");
  EXPECT_EQ(error_of("{{ 1 + 'a' }}"), "tpl:1:6: unsupported operand type(s) for +: 'int' and 'str'");
  EXPECT_EQ(error_of("{{ x|length }}", json{{"x", 5}}), "tpl:1:6: object of type 'int' has no len()");
  EXPECT_EQ(error_of("{% for a in 5 %}{% endfor %}"), "tpl:1:4: 'int' object is not iterable");
  EXPECT_EQ(error_of("{{ 'a'.nomethod() }}"), "tpl:1:7: 'str object' has no attribute 'nomethod'");
  EXPECT_EQ(error_of("{% set ns = 1 %}{% set ns.a = 2 %}"),
            "tpl:1:20: cannot assign attribute 'a' on 'ns': not a namespace object");
  EXPECT_EQ(error_of("{{ x|tojson }}"), "tpl:1:6: tojson: object of type Undefined is not JSON serializable");
}

TEST(JinjaErrors, RaiseExceptionKeepsTheMessage) {
  Template t("{% if messages|length == 0 %}{{ raise_exception('No messages: ' ~ n) }}{% endif %}ok", "tpl");
  EXPECT_EQ(t.render(json{{"messages", {1}}}), "ok");
  try {
    t.render(json{{"messages", json::array()}, {"n", 0}});
    FAIL() << "expected RaisedError";
  } catch (const RaisedError& e) {
    EXPECT_STREQ(e.what(), "No messages: 0");
  }
}

TEST(JinjaErrors, HostileTemplatesHitLimits) {
  RenderOptions small;
  small.max_output = 1000;
  small.max_iterations = 5000;
  small.max_call_depth = 20;
  EXPECT_EQ(error_of("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", {}, small),
            "tpl:1:29: more than 5000 loop iterations");
  EXPECT_EQ(error_of("{% for i in range(100) %}0123456789abcdef{% endfor %}", {}, small),
            "tpl:1:26: output exceeds 1000 bytes");
  EXPECT_EQ(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {}, small),
            "tpl:1:4: macro 'f' nested deeper than 20 calls");
  EXPECT_EQ(error_of("{{ range(10000000)|length }}"), "tpl:1:4: range() longer than 1000000 items");
  EXPECT_EQ(error_of("{{ 'ab' * 100000000 }}"), "tpl:1:9: repetition result too large");
  EXPECT_EQ(error_of("{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}").find("nested too deeply") != std::string::npos,
            true);
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += "{% if true %}";
  EXPECT_NE(error_of(deep).find("nested too deeply"), std::string::npos);
}

}  // namespace
}  // namespace keel::jinja
