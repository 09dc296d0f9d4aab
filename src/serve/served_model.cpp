// From a parsed Request to a runnable Job (see served_model.h).
#include "serve/served_model.h"

#include <random>

#include "core/error.h"
#include "engine/text_stream.h"
#include "program/rules.h"

namespace keel::serve {

namespace {

/// Whether the tokenizer renders chats (a template, or a built-in format).
bool has_chat_format(const tokenizer::Tokenizer& t) {
  return t.has_chat_template() || t.chat_format() != tokenizer::ChatFormat::None;
}

std::vector<int32_t> render(const std::vector<tokenizer::ChatMessage>& messages, const tokenizer::Tokenizer& t) {
  // Templates and the built-in formats write BOS themselves; plain
  // concatenation (no chat format) still gets the tokenizer's (as keel chat).
  std::string text;
  try {
    text = t.render_chat(messages, true);
  } catch (const Error& e) {
    throw HttpError(400, cat("the chat template refused the messages: ", e.what()), "messages", "invalid_value");
  }
  return t.encode(text, !has_chat_format(t));
}

}  // namespace

std::vector<int32_t> prompt_tokens(const Request& r, const ServedModel& m) {
  const tokenizer::Tokenizer& t = *m.tokenizer;
  std::vector<int32_t> ids;
  const char* param = r.kind == Kind::Chat ? "messages" : "prompt";
  if (r.kind == Kind::Chat) {
    ids = render(r.messages, t);
  } else if (!r.prompt_ids.empty()) {
    ids = r.prompt_ids;
    for (int32_t id : ids)
      if (id >= m.vocab)
        throw HttpError(400, cat("'prompt' holds token id ", id, " but the vocabulary has ", m.vocab, " tokens"),
                        "prompt", "invalid_value");
  } else if (r.api == Api::Ollama && !r.raw && has_chat_format(t)) {
    std::vector<tokenizer::ChatMessage> msgs;
    if (!r.system.empty()) msgs.push_back({"system", r.system});
    msgs.push_back({"user", r.prompt});
    ids = render(msgs, t);
  } else {
    ids = t.encode(r.system.empty() ? r.prompt : r.system + "\n\n" + r.prompt, true);
  }
  if (ids.empty()) throw HttpError(400, "the prompt is empty after tokenization", param, "invalid_value");
  const int64_t ctx = m.backend->max_context();
  // The prompt must leave room for one generated token (program/rules.h).
  if (!program::prompt_fits(int64_t(ids.size()), ctx) || program::context_full(int64_t(ids.size()), ctx))
    throw HttpError(400, cat("the prompt is ", ids.size(), " tokens but this server's context holds ", ctx,
                             " tokens (prompt and reply together; keel serve --context)"),
                    param, "context_length_exceeded");
  return ids;
}

std::shared_ptr<Job> make_job(const Request& r, const ServedModel& m) {
  engine::GenerateRequest g;
  g.prompt = prompt_tokens(r, m);
  const int64_t room = m.backend->max_context() - int64_t(g.prompt.size());
  g.max_tokens = int32_t(r.max_tokens < 0 ? room : std::min<int64_t>(r.max_tokens, room));
  try {
    g.sampling = engine::resolve_sampling(r.sampling, m.generation);
  } catch (const Error& e) {
    throw HttpError(400, e.what(), "", "invalid_value");
  }
  if (!r.seed_given) g.sampling.seed = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
  if (!r.ignore_eos) g.eos_ids = m.eos_ids;
  g.logprobs = r.logprobs;
  auto text = std::make_unique<engine::TextStream>(*m.tokenizer, r.stop, g.prompt);
  return std::make_shared<Job>(std::move(g), std::move(text));
}

}  // namespace keel::serve
