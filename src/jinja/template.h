// keel's Jinja2 engine for chat templates: the subset of Jinja that Hugging
// Face chat templates use, rendered the way transformers' apply_chat_template
// renders them (trim_blocks, lstrip_blocks, loop controls, {% generation %},
// and its globals raise_exception, strftime_now, namespace, dict and its
// tojson filter), so the text matches transformers byte for byte.
// docs/chat-templates.md lists what is supported.
//
//   jinja::Template t(source, "tokenizer_config.json chat_template");
//   std::string text = t.render({{"messages", msgs}, {"add_generation_prompt", true}});
#pragma once

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "core/error.h"

namespace keel::jinja {

/// What raise_exception(message) throws: what() is the template's message,
/// unchanged (a server can pass it on to the client as it is).
class RaisedError : public Error {
 public:
  using Error::Error;
};

struct RenderOptions {
  /// The time strftime_now() formats; the local time when unset.
  std::optional<std::tm> now;
  /// Limits that stop a hostile template: output bytes, loop iterations in
  /// all, and macro call depth. Exceeding one is a keel::Error.
  size_t max_output = size_t(64) << 20;
  size_t max_iterations = 10'000'000;
  int max_call_depth = 100;
};

class Template {
 public:
  /// Parses `source`. `name` starts every error message ("NAME:LINE:COL: ...").
  /// Throws keel::Error for syntax errors, unknown tags, filters and tests.
  explicit Template(std::string_view source, std::string name = "template");
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  /// Renders with `variables` (a JSON object: messages, tools,
  /// add_generation_prompt, bos_token, ... as the template expects). Throws
  /// RaisedError for raise_exception() and keel::Error "NAME:LINE:COL: ..."
  /// for anything else that fails (e.g. an attribute of an undefined value).
  /// Thread-safe: one Template may render on several threads at once.
  std::string render(const nlohmann::ordered_json& variables, const RenderOptions& options = {}) const;

  const std::string& name() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::jinja
