// OpenAI and Ollama reply shapes (see replies.h). Field names follow the
// APIs' references (platform.openai.com/docs/api-reference, Ollama's
// docs/api.md); Ollama durations are nanoseconds.
#include "serve/replies.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace keel::serve {

using nlohmann::json;

namespace {

const char* openai_finish(const Outcome& o) { return o.finish_reason == "length" ? "length" : "stop"; }

json usage(const Outcome& o) {
  return {{"prompt_tokens", o.prompt_tokens},
          {"completion_tokens", o.completion_tokens},
          {"total_tokens", o.prompt_tokens + o.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", o.cached_tokens}}}};
}

json openai_chunk(const ReplyContext& c, json choice) {
  bool chat = c.kind == Kind::Chat;
  return {{"id", c.id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", c.created},
          {"model", c.model}, {"choices", json::array({std::move(choice)})}};
}

/// OpenAI's logprobs object of a choice (null unless asked for): chat's
/// {"content": [{token, logprob, bytes, top_logprobs: []}]}, completions'
/// {tokens, token_logprobs, top_logprobs (each the sampled token alone),
/// text_offset (bytes into the generated text)}.
/// The per-token entries OpenAI chat and Ollama share: {token, logprob,
/// bytes, top_logprobs: []}. A token's text may hold invalid UTF-8 (dump()
/// replaces it); its bytes are exact.
json token_entries(const std::vector<TokenLogprob>& lps) {
  json content = json::array();
  for (const TokenLogprob& t : lps) {
    json bytes = json::array();
    for (unsigned char ch : t.token) bytes.push_back(int(ch));
    content.push_back({{"token", t.token}, {"logprob", t.logprob}, {"bytes", std::move(bytes)},
                       {"top_logprobs", json::array()}});
  }
  return content;
}

json openai_logprobs(const ReplyContext& c, const std::vector<TokenLogprob>& lps) {
  if (!c.logprobs) return nullptr;
  if (c.kind == Kind::Chat) return {{"content", token_entries(lps)}, {"refusal", nullptr}};
  json tokens = json::array(), values = json::array(), top = json::array(), offsets = json::array();
  for (const TokenLogprob& t : lps) {
    tokens.push_back(t.token);
    values.push_back(t.logprob);
    top.push_back({{t.token, t.logprob}});
    offsets.push_back(t.offset);
  }
  return {{"tokens", std::move(tokens)}, {"token_logprobs", std::move(values)}, {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

json openai_choice(const ReplyContext& c, const std::string& text, const json& finish,
                   const std::vector<TokenLogprob>& lps = {}) {
  if (c.kind == Kind::Chat)
    return {{"index", 0}, {"delta", {{"content", text}}}, {"logprobs", openai_logprobs(c, lps)}, {"finish_reason", finish}};
  return {{"index", 0}, {"text", text}, {"logprobs", openai_logprobs(c, lps)}, {"finish_reason", finish}};
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }
std::string ndjson(const json& j) { return dump(j) + "\n"; }

int64_t ns(double ms) { return int64_t(ms * 1e6); }

/// An Ollama object before its payload: model and created_at.
json ollama_head(const ReplyContext& c) { return {{"model", c.model}, {"created_at", iso_time_now()}}; }

json ollama_message(const std::string& text) { return {{"role", "assistant"}, {"content", text}}; }

json ollama_final(const ReplyContext& c, const Outcome& o, const std::string& text,
                  const std::vector<TokenLogprob>& lps = {}) {
  json j = ollama_head(c);
  if (c.kind == Kind::Chat) j["message"] = ollama_message(text);
  else j["response"] = text;
  if (c.logprobs) j["logprobs"] = token_entries(lps);
  j["done"] = true;
  j["done_reason"] = o.finish_reason == "length" ? "length" : "stop";
  j["total_duration"] = ns(o.queue_ms + o.prefill_ms + o.decode_ms);
  j["load_duration"] = 0;
  j["prompt_eval_count"] = o.prompt_tokens;
  j["prompt_eval_duration"] = ns(o.prefill_ms);
  j["eval_count"] = o.completion_tokens;
  j["eval_duration"] = ns(o.decode_ms);
  return j;
}

std::string family_of(const ModelCard& m) { return m.family.empty() ? std::string("unknown") : m.family; }

std::string parameter_size(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.1fB", double(n) / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.1fM", double(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.0fK", double(n) / 1e3);
  return buf;
}

json ollama_details(const ModelCard& m) {
  return {{"parent_model", ""}, {"format", m.format}, {"family", family_of(m)},
          {"families", json::array({family_of(m)})}, {"parameter_size", parameter_size(m.parameters)},
          {"quantization_level", m.quantization}};
}

std::string iso_time(int64_t unix_seconds, int64_t nanos) {
  std::time_t t = std::time_t(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, (long long)nanos);
  return buf;
}

}  // namespace

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string iso_time_now() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto s = std::chrono::duration_cast<std::chrono::seconds>(now);
  return iso_time(s.count(), std::chrono::duration_cast<std::chrono::nanoseconds>(now - s).count());
}

const char* stream_content_type(Api api) { return api == Api::OpenAI ? "text/event-stream" : "application/x-ndjson"; }

std::string stream_open(const ReplyContext& c) {
  if (c.api != Api::OpenAI || c.kind != Kind::Chat) return {};
  return sse(openai_chunk(c, {{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                              {"logprobs", nullptr}, {"finish_reason", nullptr}}));
}

std::string stream_piece(const ReplyContext& c, const std::string& text, const std::vector<TokenLogprob>& logprobs) {
  if (c.api == Api::OpenAI) return sse(openai_chunk(c, openai_choice(c, text, nullptr, logprobs)));
  json j = ollama_head(c);
  if (c.kind == Kind::Chat) j["message"] = ollama_message(text);
  else j["response"] = text;
  if (c.logprobs) j["logprobs"] = token_entries(logprobs);
  j["done"] = false;
  return ndjson(j);
}

std::string stream_close(const ReplyContext& c, const Outcome& o) {
  if (c.api == Api::Ollama) return ndjson(ollama_final(c, o, ""));
  json last = openai_chunk(c, openai_choice(c, "", openai_finish(o)));
  if (c.kind == Kind::Chat) last["choices"][0]["delta"] = json::object();
  std::string out = sse(last);
  if (c.include_usage) {
    json u = openai_chunk(c, {});
    u["choices"] = json::array();
    u["usage"] = usage(o);
    out += sse(u);
  }
  return out + "data: [DONE]\n\n";
}

std::string stream_error(const ReplyContext& c, const HttpError& e) {
  if (c.api == Api::Ollama) return ndjson(error_json(c.api, e));
  return sse(error_json(c.api, e)) + "data: [DONE]\n\n";
}

json full_reply(const ReplyContext& c, const Outcome& o) {
  if (c.api == Api::Ollama) return ollama_final(c, o, o.text, o.logprobs);
  json choice;
  if (c.kind == Kind::Chat)
    choice = {{"index", 0}, {"message", {{"role", "assistant"}, {"content", o.text}}},
              {"logprobs", openai_logprobs(c, o.logprobs)}, {"finish_reason", openai_finish(o)}};
  else
    choice = {{"index", 0}, {"text", o.text}, {"logprobs", openai_logprobs(c, o.logprobs)},
              {"finish_reason", openai_finish(o)}};
  json j = openai_chunk(c, choice);
  j["object"] = c.kind == Kind::Chat ? "chat.completion" : "text_completion";
  j["usage"] = usage(o);
  return j;
}

json openai_model(const ModelCard& m) {
  return {{"id", m.name}, {"object", "model"}, {"created", m.created}, {"owned_by", "keel"},
          {"max_model_len", m.context_length}};
}

json openai_models(const ModelCard& m) { return {{"object", "list"}, {"data", json::array({openai_model(m)})}}; }

json ollama_tags(const ModelCard& m) {
  json entry = {{"name", m.name + ":latest"}, {"model", m.name + ":latest"}, {"modified_at", iso_time(m.created, 0)},
                {"size", m.size_bytes}, {"digest", ""}, {"details", ollama_details(m)}};
  return {{"models", json::array({entry})}};
}

json ollama_show(const ModelCard& m) {
  std::string f = family_of(m);
  return {{"modelfile", ""},
          {"parameters", ""},
          {"template", m.chat_template},
          {"details", ollama_details(m)},
          {"model_info", {{"general.architecture", f}, {"general.parameter_count", m.parameters},
                          {f + ".context_length", m.context_length}}},
          {"capabilities", json::array({"completion"})},
          {"modified_at", iso_time(m.created, 0)}};
}

}  // namespace keel::serve
