// The interface every way of running a model implements for the frontends (CLI,
// chat, server): the reference forward pass, the CPU executor and the CUDA
// executor. A backend runs prefill and the decode loop for one sequence and
// reports each token as soon as it exists, so the frontends can stream.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampling.h"

namespace keel::engine {

struct GenerateRequest {
  std::vector<int32_t> prompt;      // must be non-empty
  int32_t max_tokens = 128;         // tokens to generate at most
  SamplingParams sampling;
  std::vector<int32_t> eos_ids;     // generation ends after producing one of these
  /// Sampling draws made before (a generation resumed with its output so far
  /// appended to the prompt): the draws continue from there, so the tokens
  /// are those an uninterrupted generation samples.
  int32_t draws_before = 0;
  /// Report each generated token's log-probability: over the logits it was
  /// drawn from (after the repetition penalty and temperature, before top-k,
  /// top-p and min-p; greedy: the model's), program::token_logprob. In
  /// GenerateResult::logprobs, and to on_logprob (if set) just before the
  /// token callback gets the token.
  bool logprobs = false;
  std::function<void(float logprob)> on_logprob;
};

struct GenerateResult {
  std::vector<int32_t> output;      // generated ids (an EOS that ended it included)
  std::vector<float> logprobs;      // GenerateRequest::logprobs: one per output token
  double prefill_ms = 0;            // time to the first generated token
  double decode_ms_per_token = 0;   // mean over the tokens after the first
  std::string stop_reason;          // "eos", "max_tokens", "stopped" (callback), "context"
  /// Prompt positions whose K/V an earlier run left in the cache and this one
  /// did not compute again (prefix reuse: engine/kv_pages.h).
  int64_t cached_tokens = 0;
  /// Sequences and positions of the Program it decoded on (cpu, cuda: the
  /// first of the backend's decode Programs that held its launch, by batch
  /// and then context: engine::decode_variants); 0: not said.
  int program_batch = 0;
  int64_t program_context = 0;
};

/// Called with each generated token; return false to stop generation early.
using TokenCallback = std::function<bool(int32_t token)>;
/// Called with (request index, token) for each token of a batch; return false
/// to stop the batch (every request of the launch) at the next step.
using BatchTokenCallback = std::function<bool(int index, int32_t token)>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  /// Context length this backend was set up for (prompt + generated tokens).
  virtual int64_t max_context() const = 0;
  /// Prefills the prompt, then decodes until EOS, max_tokens, the context end
  /// or the callback returns false. The positions of the prompt that an
  /// earlier call left in the KV cache (the same tokens from the start: a
  /// conversation's earlier turns, a shared system prompt) are not computed
  /// again (GenerateResult::cached_tokens; engine/kv_pages.h).
  virtual GenerateResult generate(const GenerateRequest& req, const TokenCallback& on_token) = 0;
  /// Teacher-forced logits [ids.size(), vocab], row t = logits after ids[0..t].
  virtual std::vector<float> score(std::span<const int32_t> ids) = 0;
  /// Sequences one launch runs together (the compiled Program's batch); 1 for
  /// a backend that runs one sequence at a time.
  virtual int max_batch() const { return 1; }
  /// The decode Programs a launch may run on, in the order it tries them (the
  /// first that holds its requests and their positions decodes them: fewer
  /// sequences, or a shorter context, than the backend's own, which is last).
  struct DecodeProgram {
    int batch = 1;
    int64_t context = 0;
  };
  virtual std::vector<DecodeProgram> decode_programs() const { return {{max_batch(), max_context()}}; }
  /// Runs several requests and returns one result per request, in order. The
  /// cpu and cuda backends run up to max_batch() of them together in one
  /// launch (each weight byte read once per step for all of them); the
  /// requests of a launch must share their EOS ids. The default runs them one
  /// after another through generate(). prefill_ms is the launch's time to its
  /// first token.
  virtual std::vector<GenerateResult> generate_batch(std::span<const GenerateRequest> reqs,
                                                     const BatchTokenCallback& on_token);
  /// Positions of `prompt` a generation started now would take from the KV
  /// cache (prefix reuse; at most prompt.size() - 1): what it reports as
  /// GenerateResult::cached_tokens, but for pages the launch's other
  /// requests publish or evict meanwhile. 0 on a backend without reuse.
  virtual int64_t cached_prefix(std::span<const int32_t> prompt) const {
    (void)prompt;
    return 0;
  }
  /// A paged KV cache (cpu, cuda: engine/kv_pages.h): the pages in all, and
  /// the pages a generation that writes `positions` positions leases (the
  /// sequences of a launch, and a page for idle lanes on a batch backend, must
  /// fit together: fit_launch). 0 and 0 where the cache holds every
  /// sequence's whole context.
  virtual int64_t kv_pages_total() const { return 0; }
  virtual int64_t kv_pages_for(int64_t positions) const {
    (void)positions;
    return 0;
  }
};

/// How many of `reqs` (from the first, at most `batch`) one launch of
/// `backend` can run: their KV pages (prompt + max_tokens positions each) and,
/// on a backend of max_batch() > 1, a page for idle lanes must fit
/// kv_pages_total(); all of `batch` when the cache is not paged. 0 when not
/// even the first fits alone.
size_t fit_launch(const Backend& backend, std::span<const GenerateRequest> reqs, size_t batch);

}  // namespace keel::engine
