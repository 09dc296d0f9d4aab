// The request side of `keel serve`'s two HTTP APIs: the body of an OpenAI
// (/v1/completions, /v1/chat/completions) or Ollama (/api/generate, /api/chat)
// request is parsed and validated into one neutral Request, independent of
// HTTP and of the model. Anything a client sends wrong becomes an HttpError
// carrying the status and the field at fault, which the server answers in the
// API's own error shape (error_json). Nothing here touches a socket, so every
// rule is unit-tested (tests/serve/test_serve_api.cpp).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/sampling.h"
#include "tokenizer/tokenizer.h"

namespace keel::serve {

/// An error answered to the client: the HTTP status, OpenAI's error `type` and
/// `code`, and `param`, the request field at fault (empty when none).
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, std::string message, std::string param = {}, std::string code = {});
  int status;
  std::string type;  // from the status: invalid_request_error, authentication_error, ...
  std::string param;
  std::string code;
};

enum class Api { OpenAI, Ollama };
enum class Kind { Completion, Chat };

/// One generation request, whichever API it came through.
struct Request {
  Api api = Api::OpenAI;
  Kind kind = Kind::Completion;
  std::string model;                             // as the client named it ("" when absent)
  std::string prompt;                            // Completion: the prompt text
  std::vector<int32_t> prompt_ids;               // Completion: the prompt as token ids (OpenAI)
  bool raw = false;                              // Ollama generate: the prompt is used as is, no template
  std::string system;                            // Ollama generate: a system message for the template
  std::vector<tokenizer::ChatMessage> messages;  // Chat: the conversation
  int64_t max_tokens = -1;                       // -1: until EOS or the context ends
  engine::SamplingOverrides sampling;            // what the request set (-1: not given)
  bool seed_given = false;
  std::vector<std::string> stop;                 // stop strings
  bool ignore_eos = false;                       // vLLM's extension: generate max_tokens whatever comes (benchmarks)
  bool stream = false;
  bool include_usage = false;                    // OpenAI stream_options.include_usage
  bool logprobs = false;                         // OpenAI: each generated token's log-probability (no alternatives)
};

/// Parses a request body: 400 when it is not JSON or not a JSON object.
nlohmann::json parse_body(const std::string& body);

/// The four generation endpoints. Each throws HttpError (400, naming the
/// field) for a field of the wrong type or out of range, and for features
/// keel does not serve (n > 1, top log-probability alternatives, tools,
/// images, ...), so a client is never silently given something other than
/// what it asked for.
Request parse_openai_completion(const nlohmann::json& body);
Request parse_openai_chat(const nlohmann::json& body);
Request parse_ollama_generate(const nlohmann::json& body);
Request parse_ollama_chat(const nlohmann::json& body);

/// The most stop strings a request may give.
inline constexpr size_t kMaxStops = 16;

/// The body of an error answer: OpenAI's {"error": {"message", "type",
/// "param", "code"}} or Ollama's {"error": "message"}.
nlohmann::json error_json(Api api, const HttpError& e);

/// Whether `requested` (as a client wrote it) names the served model
/// `served`: the same name, or with Ollama's ":latest" tag; empty matches.
bool model_matches(const std::string& requested, const std::string& served);

}  // namespace keel::serve
