// The response side of `keel serve`'s APIs: the JSON shapes OpenAI and Ollama
// clients parse, for whole replies, for streams (OpenAI server-sent events
// ending in `data: [DONE]`, Ollama NDJSON ending in an object with done:true
// and the counts) and for the model listings. Pure functions of their inputs,
// unit-tested beside the request parsing.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "serve/api.h"
#include "serve/scheduler.h"

namespace keel::serve {

/// What every reply of one request repeats.
struct ReplyContext {
  Api api = Api::OpenAI;
  Kind kind = Kind::Completion;
  std::string id;          // "cmpl-..." / "chatcmpl-..."
  std::string model;       // the served model's name
  int64_t created = 0;     // unix seconds
  bool include_usage = false;
  bool logprobs = false;   // OpenAI: the sampled tokens' log-probabilities in every choice
};

/// What the served model is, for /v1/models, /api/tags and /api/show.
struct ModelCard {
  std::string name;           // what clients put in "model"
  std::string family;         // e.g. "llama", "qwen3"
  std::string format;         // "safetensors" or "gguf"
  std::string quantization;   // e.g. "F32", "BF16", "Q4_1"
  int64_t parameters = 0;
  int64_t context_length = 0; // the context keel serves (--context)
  int64_t size_bytes = 0;     // weights
  int64_t created = 0;        // unix seconds (server start)
  std::string chat_template;  // the checkpoint's template source, or "" (built-in format / none)
};

/// "text/event-stream" (OpenAI) or "application/x-ndjson" (Ollama).
const char* stream_content_type(Api api);
/// The stream's first chunk: OpenAI chat's assistant-role delta; "" otherwise.
std::string stream_open(const ReplyContext& c);
/// A piece of text; with c.logprobs, OpenAI's log-probabilities of the tokens
/// released with it.
std::string stream_piece(const ReplyContext& c, const std::string& text,
                         const std::vector<TokenLogprob>& logprobs = {});
/// The final chunk(s): finish reason, usage (OpenAI when include_usage,
/// Ollama always) and OpenAI's `data: [DONE]`.
std::string stream_close(const ReplyContext& c, const Outcome& o);
/// An error after the stream began: an event with the API's error body.
std::string stream_error(const ReplyContext& c, const HttpError& e);
/// The whole reply of a request that did not stream.
nlohmann::json full_reply(const ReplyContext& c, const Outcome& o);

nlohmann::json openai_models(const ModelCard& m);
nlohmann::json openai_model(const ModelCard& m);
nlohmann::json ollama_tags(const ModelCard& m);
nlohmann::json ollama_show(const ModelCard& m);

/// JSON text with invalid UTF-8 replaced (model output may hold any bytes).
std::string dump(const nlohmann::json& j);
/// "2024-05-01T12:00:00.123456789Z", the time Ollama replies carry.
std::string iso_time_now();

}  // namespace keel::serve
