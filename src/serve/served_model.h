// The model `keel serve` answers with, and the step from a parsed Request to
// a Job the scheduler can run: the prompt rendered with the checkpoint's chat
// template (Tokenizer::render_chat) and tokenized, checked against the
// vocabulary and the context, the sampling settings resolved against
// generation_config.json, the stop strings and EOS ids attached.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/backend.h"
#include "model/config.h"
#include "serve/api.h"
#include "serve/replies.h"
#include "serve/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace keel::serve {

struct ServedModel {
  ModelCard card;
  std::unique_ptr<engine::Backend> backend;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;  // required: the APIs speak text
  std::vector<int32_t> eos_ids;                     // as `keel generate` chooses them
  model::GenerationConfig generation;               // sampling defaults
  int64_t vocab = 0;                                // config.json vocab_size
};

/// The prompt's token ids as the model sees them. Completions: the text with
/// the tokenizer's BOS (as `keel generate --prompt`), or the ids given; an
/// Ollama /api/generate prompt goes through the chat template unless `raw`
/// or the checkpoint has no chat format. Chats: the messages rendered with the
/// checkpoint's template and a generation prompt (as `keel chat`). Throws
/// HttpError 400 for a template that raises, ids outside the vocabulary, or a
/// prompt that leaves no room in the context (code context_length_exceeded).
std::vector<int32_t> prompt_tokens(const Request& r, const ServedModel& m);

/// A job ready to submit: max_tokens capped by the room left in the context
/// (a request without max_tokens generates until EOS or the context ends);
/// an unseeded request gets a random seed. Throws HttpError 400 for sampling
/// settings the sampler refuses.
std::shared_ptr<Job> make_job(const Request& r, const ServedModel& m);

}  // namespace keel::serve
