// Parsing and validation of OpenAI and Ollama request bodies (see api.h).
// Fields keel does not know are ignored, as both APIs' servers do; fields it
// knows but cannot honour are refused with a 400 that names them.
#include "serve/api.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace keel::serve {

using nlohmann::json;

namespace {

std::string type_for(int status) {
  switch (status) {
    case 400: case 413: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw HttpError(400, message, param, "invalid_value");
}

/// The field `name` of `b`, or null when absent or JSON null.
const json* field(const json& b, const char* name) {
  auto it = b.find(name);
  return it == b.end() || it->is_null() ? nullptr : &*it;
}

const char* json_type(const json& v) { return v.type_name(); }

double number(const json& b, const char* name, double lo, double hi) {
  const json* v = field(b, name);
  if (!v->is_number()) bad(name, cat("'", name, "' must be a number, got ", json_type(*v)));
  double d = v->get<double>();
  if (!(d >= lo && d <= hi)) bad(name, cat("'", name, "' must be in [", lo, ", ", hi, "], got ", v->dump()));
  return d;
}

int64_t integer(const json& b, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(b, name);
  bool whole = v->is_number_integer() || (v->is_number_float() && std::nearbyint(v->get<double>()) == v->get<double>() &&
                                          std::fabs(v->get<double>()) < 9e18);
  if (!whole) bad(name, cat("'", name, "' must be an integer, got ", v->dump()));
  int64_t i = v->is_number_unsigned() ? int64_t(std::min<uint64_t>(v->get<uint64_t>(), uint64_t(INT64_MAX)))
              : v->is_number_integer() ? v->get<int64_t>()
                                       : int64_t(v->get<double>());
  if (i < lo || i > hi) bad(name, cat("'", name, "' must be in [", lo, ", ", hi, "], got ", v->dump()));
  return i;
}

bool boolean(const json& b, const char* name, bool fallback) {
  const json* v = field(b, name);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(name, cat("'", name, "' must be true or false, got ", v->dump()));
  return v->get<bool>();
}

std::string string_field(const json& b, const char* name) {
  const json* v = field(b, name);
  if (!v) return {};
  if (!v->is_string()) bad(name, cat("'", name, "' must be a string, got ", json_type(*v)));
  return v->get<std::string>();
}

/// A string, or a list of strings (OpenAI `stop`, Ollama options.stop).
std::vector<std::string> stop_strings(const json& b, const char* name) {
  const json* v = field(b, name);
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const json& s : *v) {
      if (!s.is_string()) bad(name, cat("'", name, "' must be a string or a list of strings"));
      out.push_back(s.get<std::string>());
    }
  } else {
    bad(name, cat("'", name, "' must be a string or a list of strings, got ", json_type(*v)));
  }
  if (out.size() > kMaxStops) bad(name, cat("'", name, "' has ", out.size(), " stop strings; at most ", kMaxStops));
  for (const std::string& s : out)
    if (s.empty()) bad(name, cat("'", name, "' holds an empty string"));
  return out;
}

/// Refuses a field that asks for something keel does not serve.
void refuse_if(bool present, const char* name, const std::string& why) {
  if (present) bad(name, cat("'", name, "' is not supported by keel serve: ", why));
}

bool truthy(const json* v) {
  if (!v) return false;
  if (v->is_boolean()) return v->get<bool>();
  if (v->is_number()) return v->get<double>() != 0;
  if (v->is_string() || v->is_array() || v->is_object()) return !v->empty();
  return true;
}

/// `logprobs: true` (OpenAI chat, Ollama): the sampled tokens'
/// log-probabilities; `top_logprobs` (alternatives) only 0.
void flag_logprobs(const json& b, Request& r) {
  r.logprobs = boolean(b, "logprobs", false);
  if (field(b, "top_logprobs")) {
    if (!r.logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    refuse_if(integer(b, "top_logprobs", 0, 20) > 0, "top_logprobs",
              "keel reports the sampled token's log-probability, not the top alternatives (use top_logprobs: 0)");
  }
}

/// Sampling, stop, n, logprobs and the other fields both OpenAI endpoints share.
void openai_common(const json& b, Request& r) {
  r.model = string_field(b, "model");
  if (field(b, "n") && integer(b, "n", 1, 128) != 1) bad("n", "'n' must be 1: keel serve returns one choice per request");
  if (field(b, "best_of") && integer(b, "best_of", 1, 128) != 1) bad("best_of", "'best_of' must be 1");
  // Log-probabilities of the sampled tokens: completions' logprobs = 0, chat's
  // logprobs = true (top_logprobs 0). Alternatives (completions' logprobs >
  // 0, chat's top_logprobs > 0) are not computed.
  const json* lp = field(b, "logprobs");
  if (r.kind == Kind::Completion) {
    if (lp && !lp->is_null()) {
      r.logprobs = true;
      refuse_if(integer(b, "logprobs", 0, 20) > 0, "logprobs",
                "keel reports the sampled token's log-probability, not the top alternatives (use logprobs: 0)");
    }
  } else {
    flag_logprobs(b, r);
  }
  refuse_if(truthy(field(b, "logit_bias")), "logit_bias", "the sampler has no per-token bias");
  for (const char* pen : {"presence_penalty", "frequency_penalty"})
    if (field(b, pen) && number(b, pen, -2, 2) != 0)
      bad(pen, cat("'", pen, "' is not supported by keel serve (use repetition_penalty)"));
  if (field(b, "max_tokens")) r.max_tokens = integer(b, "max_tokens", 1, 1 << 30);
  if (field(b, "temperature")) r.sampling.temperature = number(b, "temperature", 0, 2);
  if (field(b, "top_p")) r.sampling.top_p = number(b, "top_p", 0, 1);
  if (r.sampling.top_p == 0) bad("top_p", "'top_p' must be in (0, 1]");
  if (field(b, "top_k")) r.sampling.top_k = std::max<int64_t>(0, integer(b, "top_k", -1, INT32_MAX));  // -1: off (vLLM)
  if (field(b, "min_p")) r.sampling.min_p = number(b, "min_p", 0, 1);
  if (field(b, "repetition_penalty")) r.sampling.repetition_penalty = number(b, "repetition_penalty", 0.01, 100);
  if (field(b, "seed")) {
    r.sampling.seed = uint64_t(integer(b, "seed", INT64_MIN, INT64_MAX));
    r.seed_given = true;
  }
  r.stop = stop_strings(b, "stop");
  r.ignore_eos = boolean(b, "ignore_eos", false);
  r.stream = boolean(b, "stream", false);
  if (const json* so = field(b, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    r.include_usage = boolean(*so, "include_usage", false);
  }
}

/// Message content: a string, or OpenAI's list of {"type": "text", "text"} parts.
std::string message_content(const json& m, const std::string& where) {
  const json* c = field(m, "content");
  if (!c) return {};
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) bad(where + ".content", "message content must be a string or a list of text parts");
  std::string text;
  for (const json& part : *c) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      bad(where + ".content", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<tokenizer::ChatMessage> messages(const json& b, Api api) {
  const json* ms = field(b, "messages");
  if (!ms || !ms->is_array() || ms->empty()) bad("messages", "'messages' must be a non-empty list of messages");
  std::vector<tokenizer::ChatMessage> out;
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    std::string where = cat("messages[", i, "]");
    if (!m.is_object()) bad(where, where + " must be an object with 'role' and 'content'");
    const json* role = field(m, "role");
    if (!role || !role->is_string()) bad(where + ".role", where + ".role must be a string");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";  // OpenAI's newer name for the system role
    if (r != "system" && r != "user" && r != "assistant")
      bad(where + ".role", cat(where, ".role '", r, "' is not supported (system, user, assistant)"));
    refuse_if(truthy(field(m, "tool_calls")), "tool_calls", "tool calls are not served yet");
    refuse_if(truthy(field(m, "images")), "images", "keel serves text models");
    out.push_back({r, message_content(m, where)});
    (void)api;
  }
  return out;
}

/// Ollama's "options" object, and the top-level fields both Ollama endpoints share.
void ollama_common(const json& b, Request& r) {
  r.api = Api::Ollama;
  r.model = string_field(b, "model");
  r.stream = boolean(b, "stream", true);  // Ollama streams unless told not to
  refuse_if(truthy(field(b, "format")), "format", "structured output (JSON mode) is not served yet");
  refuse_if(truthy(field(b, "images")), "images", "keel serves text models");
  refuse_if(truthy(field(b, "tools")), "tools", "tool calls are not served yet");
  flag_logprobs(b, r);
  const json* o = field(b, "options");
  if (!o) return;
  if (!o->is_object()) bad("options", "'options' must be an object");
  if (field(*o, "num_predict")) {
    int64_t n = integer(*o, "num_predict", -2, 1 << 30);
    r.max_tokens = n > 0 ? n : -1;  // -1 (infinite), -2 (fill the context): until the context ends
    if (n == 0) bad("num_predict", "'num_predict' must not be 0");
  }
  if (field(*o, "temperature")) r.sampling.temperature = number(*o, "temperature", 0, 100);
  if (field(*o, "top_p")) r.sampling.top_p = number(*o, "top_p", 0, 1);
  if (r.sampling.top_p == 0) bad("top_p", "'top_p' must be in (0, 1]");
  if (field(*o, "top_k")) r.sampling.top_k = integer(*o, "top_k", 0, INT32_MAX);
  if (field(*o, "min_p")) r.sampling.min_p = number(*o, "min_p", 0, 1);
  if (field(*o, "repeat_penalty")) r.sampling.repetition_penalty = number(*o, "repeat_penalty", 0.01, 100);
  if (field(*o, "seed")) {
    r.sampling.seed = uint64_t(integer(*o, "seed", INT64_MIN, INT64_MAX));
    r.seed_given = true;
  }
  r.stop = stop_strings(*o, "stop");
}

}  // namespace

HttpError::HttpError(int s, std::string message, std::string p, std::string c)
    : std::runtime_error(std::move(message)), status(s), type(type_for(s)), param(std::move(p)), code(std::move(c)) {}

json parse_body(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw HttpError(400, cat("the request body is not valid JSON: ", e.what()), "", "invalid_json");
  }
  if (!j.is_object()) throw HttpError(400, cat("the request body must be a JSON object, got ", j.type_name()), "", "invalid_json");
  return j;
}

Request parse_openai_completion(const json& b) {
  Request r;
  r.kind = Kind::Completion;
  r.max_tokens = 16;  // OpenAI's default for /v1/completions
  openai_common(b, r);
  refuse_if(truthy(field(b, "echo")), "echo", "the prompt is not echoed");
  refuse_if(truthy(field(b, "suffix")), "suffix", "there is no fill-in-the-middle");
  const json* p = field(b, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  // A string, a list of ids, or a list of one of either (OpenAI batches
  // prompts in lists; one prompt per request here).
  const json* one = p;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) one = &(*p)[0];
  if (one->is_string()) {
    r.prompt = one->get<std::string>();
    if (r.prompt.empty()) bad("prompt", "'prompt' is empty");
  } else if (one->is_array() && !one->empty() && std::all_of(one->begin(), one->end(), [](const json& v) { return v.is_number_integer(); })) {
    for (const json& v : *one) {
      int64_t id = v.get<int64_t>();
      if (id < 0 || id > INT32_MAX) bad("prompt", cat("'prompt' holds token id ", id, ", not a token id"));
      r.prompt_ids.push_back(int32_t(id));
    }
  } else {
    bad("prompt", "'prompt' must be a non-empty string or a non-empty list of token ids (one prompt per request)");
  }
  return r;
}

Request parse_openai_chat(const json& b) {
  Request r;
  r.kind = Kind::Chat;
  openai_common(b, r);
  if (field(b, "max_completion_tokens")) r.max_tokens = integer(b, "max_completion_tokens", 1, 1 << 30);
  refuse_if(truthy(field(b, "tools")) || truthy(field(b, "functions")), field(b, "tools") ? "tools" : "functions",
            "tool calls are not served yet");
  if (const json* rf = field(b, "response_format"))
    refuse_if(!rf->is_object() || rf->value("type", "") != "text", "response_format",
              "only {\"type\": \"text\"}; structured output is not served yet");
  r.messages = messages(b, Api::OpenAI);
  return r;
}

Request parse_ollama_generate(const json& b) {
  Request r;
  r.kind = Kind::Completion;
  ollama_common(b, r);
  refuse_if(truthy(field(b, "suffix")), "suffix", "there is no fill-in-the-middle");
  refuse_if(truthy(field(b, "template")), "template", "the checkpoint's own chat template is used");
  refuse_if(truthy(field(b, "context")), "context", "pass the conversation with /api/chat instead");
  r.prompt = string_field(b, "prompt");  // empty: Ollama's "load the model" request
  r.system = string_field(b, "system");
  r.raw = boolean(b, "raw", false);
  return r;
}

Request parse_ollama_chat(const json& b) {
  Request r;
  r.kind = Kind::Chat;
  ollama_common(b, r);
  const json* ms = field(b, "messages");
  if (ms && ms->is_array() && ms->empty()) return r;  // Ollama's "load the model" request
  r.messages = messages(b, Api::Ollama);
  return r;
}

json error_json(Api api, const HttpError& e) {
  if (api == Api::Ollama) return {{"error", e.what()}};
  return {{"error",
           {{"message", e.what()},
            {"type", e.type},
            {"param", e.param.empty() ? json() : json(e.param)},
            {"code", e.code.empty() ? json() : json(e.code)}}}};
}

bool model_matches(const std::string& requested, const std::string& served) {
  return requested.empty() || requested == served || requested == served + ":latest";
}

}  // namespace keel::serve
