// Tokenizer::render_chat with the checkpoint's own template: the real Qwen3
// tokenizer folder renders the transformers goldens of
// tests/data/chat_templates (plain, thinking off, tools through the extra
// variables); templates come from tokenizer_config.json (a string or a list
// of named templates) or chat_template.jinja; a template keel cannot parse
// leaves the built-in format in charge and says why; raise_exception reaches
// the caller; checkpoints without a template keep the built-in formats.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "jinja/template.h"
#include "model/model_test_util.h"
#include "tokenizer/tokenizer_fixtures.h"

namespace keel::tokenizer {
namespace {

using ordered = nlohmann::ordered_json;
using model::testing::TempDir;

const ordered& golden(const std::string& name) {
  static const ordered g =
      ordered::parse(read_text_file(std::string(KEEL_SOURCE_DIR) + "/tests/data/chat_templates/goldens.json"));
  for (const ordered& c : g["cases"])
    if (c["name"] == name) return c;
  throw Error("no golden named " + name);
}

std::vector<ChatMessage> plain_messages(const ordered& msgs) {
  std::vector<ChatMessage> out;
  for (const ordered& m : msgs) out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

TEST(ChatTemplate, Qwen3FolderRendersTransformersGoldens) {
  const Tokenizer& q = testing::qwen3();
  ASSERT_TRUE(q.has_chat_template()) << q.chat_template_error();
  for (const char* name : {"qwen3/basic", "qwen3/no_system"}) {
    const ordered& c = golden(name);
    EXPECT_EQ(q.render_chat(plain_messages(c["variables"]["messages"]), c["variables"]["add_generation_prompt"]),
              c["expected"].get<std::string>())
        << name;
  }
  const ordered& off = golden("qwen3/thinking_off");
  EXPECT_EQ(q.render_chat(plain_messages(off["variables"]["messages"]), true, ordered{{"enable_thinking", false}}),
            off["expected"].get<std::string>());
  // Tool schemas and messages with tool calls go in as extra variables.
  const ordered& tools = golden("qwen3/tools");
  const ordered& v = tools["variables"];
  EXPECT_EQ(q.render_chat({}, true, ordered{{"messages", v["messages"]}, {"tools", v["tools"]}, {"enable_thinking", false}}),
            tools["expected"].get<std::string>());
  EXPECT_THROW(q.render_chat({}, true, ordered::array()), Error);
}

TEST(ChatTemplate, NoTemplateKeepsTheBuiltInFormat) {
  const Tokenizer& s = testing::stories();
  EXPECT_FALSE(s.has_chat_template());
  EXPECT_TRUE(s.chat_template_error().empty());
  EXPECT_EQ(s.render_chat({{"user", "Once upon"}, {"assistant", " a time"}}, true, ordered{{"tools", nullptr}}),
            "Once upon a time");
}

// A folder with a minimal byte-level tokenizer (ChatML and Llama-3 specials).
void write_tokenizer(const TempDir& d) {
  ordered vocab = ordered::object();
  for (int b = 'a'; b <= 'z'; ++b) vocab[std::string(1, char(b))] = b - 'a';
  ordered added = ordered::array();
  int id = 26;
  for (const char* t : {"<|im_start|>", "<|im_end|>", "<s>", "</s>"})
    added.push_back({{"id", id++}, {"content", t}, {"special", true}});
  d.write("tokenizer.json",
          ordered{{"added_tokens", added},
                  {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                  {"decoder", {{"type", "ByteLevel"}}},
                  {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", ordered::array()}}}}
              .dump());
}

TEST(ChatTemplate, NamedTemplateListPicksDefault) {
  TempDir d;
  write_tokenizer(d);
  d.write("tokenizer_config.json",
          ordered{{"bos_token", "<s>"},
                  {"eos_token", "</s>"},
                  {"chat_template",
                   {{{"name", "tool_use"}, {"template", "TOOLS"}},
                    {{"name", "default"},
                     {"template", "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}"
                                  "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"}}}}}
              .dump());
  const Tokenizer t = Tokenizer::load(d.str());
  ASSERT_TRUE(t.has_chat_template());
  EXPECT_EQ(t.render_chat({{"user", "hi"}}, true), "<s>[user]hi</s>[assistant]");
}

TEST(ChatTemplate, JinjaFileBesideTheConfig) {
  TempDir d;
  write_tokenizer(d);
  d.write("tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  // transformers 5.x writes the template here; the trailing newline is dropped, as Jinja does.
  d.write("chat_template.jinja",
          "{%- for m in messages %}\n<|im_start|>{{ m.role }}\n{{ m.content | trim }}{{ eos_token }}\n{% endfor %}\n");
  const Tokenizer t = Tokenizer::load(d.str());
  ASSERT_TRUE(t.has_chat_template());
  EXPECT_EQ(t.render_chat({{"user", " hi "}}, false), "<|im_start|>user\nhi<|im_end|>\n");
}

TEST(ChatTemplate, UnparsableTemplateFallsBackAndSaysWhy) {
  TempDir d;
  write_tokenizer(d);
  d.write("tokenizer_config.json", R"({})");
  d.write("chat_template.jinja", "{% for m in messages %}<|im_start|>{{ m.role | frobnicate }}{% endfor %}");
  const Tokenizer t = Tokenizer::load(d.str());
  EXPECT_FALSE(t.has_chat_template());
  EXPECT_EQ(t.chat_template_error(), d.file("chat_template.jinja") + ":1:48: no filter named 'frobnicate'");
  ASSERT_EQ(t.chat_format(), ChatFormat::ChatML);
  EXPECT_EQ(t.render_chat({{"user", "hi"}}, true), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, RaiseExceptionReachesTheCaller) {
  TempDir d;
  write_tokenizer(d);
  d.write("tokenizer_config.json",
          ordered{{"chat_template",
                   "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with a user "
                   "message') }}{% endif %}{{ messages[0].content }}"}}
              .dump());
  const Tokenizer t = Tokenizer::load(d.str());
  EXPECT_EQ(t.render_chat({{"user", "hi"}}, true), "hi");
  try {
    t.render_chat({{"assistant", "hi"}}, true);
    FAIL() << "expected jinja::RaisedError";
  } catch (const jinja::RaisedError& e) {
    EXPECT_STREQ(e.what(), "Conversations must start with a user message");
  }
}

}  // namespace
}  // namespace keel::tokenizer
