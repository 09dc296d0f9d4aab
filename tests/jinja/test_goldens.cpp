// Every case in tests/data/chat_templates/goldens.json (made by
// make_goldens.py with transformers' apply_chat_template) renders to the same
// bytes with keel's engine, or fails with the same raise_exception message.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "jinja/template.h"

namespace keel::jinja {
namespace {

const std::string kDir = std::string(KEEL_SOURCE_DIR) + "/tests/data/chat_templates/";

nlohmann::ordered_json goldens() {
  return nlohmann::ordered_json::parse(read_text_file(kDir + "goldens.json"));
}

// The fixed clock make_goldens.py gave transformers' strftime_now.
std::tm golden_clock(const std::string& iso) {
  std::tm tm{};
  EXPECT_EQ(std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                        &tm.tm_sec),
            6);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  std::tm copy = tm;
  timegm(&copy);  // fills tm_wday / tm_yday
  tm.tm_wday = copy.tm_wday;
  tm.tm_yday = copy.tm_yday;
  return tm;
}

TEST(JinjaGoldens, MatchTransformers) {
  const auto g = goldens();
  RenderOptions opt;
  opt.now = golden_clock(g["now"].get<std::string>());
  ASSERT_GE(g["cases"].size(), 20u);
  for (const auto& c : g["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    Template t(read_text_file(kDir + "templates/" + c["template"].get<std::string>()), name);
    if (c.contains("error")) {
      try {
        t.render(c["variables"], opt);
        ADD_FAILURE() << "expected raise_exception: " << c["error"];
      } catch (const RaisedError& e) {
        EXPECT_EQ(e.what(), c["error"].get<std::string>());
      }
      continue;
    }
    EXPECT_EQ(t.render(c["variables"], opt), c["expected"].get<std::string>());
  }
}

}  // namespace
}  // namespace keel::jinja
