// The generate loop over the reference forward pass: prefill the whole prompt in
// one batched call, sample, then decode one token at a time until a stop rule
// fires. The stop rules and the prompt bound are program/rules.h's (EOS, the
// callback asking to stop, max_tokens, the context being full, in that order),
// the sampler program/sampling.h's, as on every backend. Timing: prefill_ms
// runs from the start of prefill to the first sampled token; decode_ms_per_token
// is the mean time of each later forward + sample (the callback excluded).
#include "engine/reference_backend.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "engine/kv_pages.h"
#include "program/rules.h"
#include "program/sampling.h"

namespace keel::engine {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

ReferenceBackend::ReferenceBackend(const model::Model& m, int64_t max_context, bool prefix_reuse)
    : fwd_(m, max_context), prefix_reuse_(prefix_reuse) {}

GenerateResult ReferenceBackend::generate(const GenerateRequest& req, const TokenCallback& on_token) {
  KEEL_CHECK(req.max_tokens >= 0, "generate: max_tokens must be >= 0, got ", req.max_tokens);
  const int64_t prompt_len = int64_t(req.prompt.size());
  program::check_prompt_fits(prompt_len, fwd_.max_context(), "reference backend");

  GenerateResult res;
  if (req.max_tokens == 0) {
    res.stop_reason = "max_tokens";
    return res;
  }
  KEEL_CHECK(req.draws_before >= 0, "reference backend: draws_before must be >= 0");
  Sampler sampler(req.sampling, 0, uint32_t(req.draws_before));
  std::vector<int32_t> history(req.prompt);
  history.reserve(req.prompt.size() + size_t(req.max_tokens));

  // Prefix reuse: the positions of the prompt the cache holds from the last
  // call stay; the rest of the prompt is forwarded.
  const int64_t reuse = prefix_reuse_ ? std::min(common_prefix(held_, req.prompt), prompt_len - 1) : 0;
  fwd_.truncate(reuse);
  held_.assign(req.prompt.begin(), req.prompt.end());
  res.cached_tokens = reuse;
  const Clock::time_point t0 = Clock::now();
  std::vector<float> logits;
  try {
    logits = fwd_.forward(std::span<const int32_t>(req.prompt).subspan(size_t(reuse)));
  } catch (...) {
    forget();
    throw;
  }
  double decode_ms = 0;
  if (program::context_full(prompt_len, fwd_.max_context())) {  // a prompt of max_context tokens
    res.stop_reason = program::stop_reason_name(program::StopReason::Context);
    return res;
  }
  for (;;) {
    Clock::time_point ts = Clock::now();
    if (!res.output.empty()) {
      logits = fwd_.forward(std::span<const int32_t>(&res.output.back(), 1));
      held_.push_back(res.output.back());
    }
    const int32_t tok = sampler.sample(logits, history);
    if (req.logprobs) {  // over the logits sample() drew from (penalty and temperature applied in place)
      res.logprobs.push_back(program::token_logprob(logits.data(), int64_t(logits.size()), tok));
      if (req.on_logprob) req.on_logprob(res.logprobs.back());
    }
    if (res.output.empty()) {
      res.prefill_ms = ms_since(t0);
    } else {
      decode_ms += ms_since(ts);
    }
    res.output.push_back(tok);
    history.push_back(tok);

    const bool keep_going = on_token ? on_token(tok) : true;
    const bool eos = std::find(req.eos_ids.begin(), req.eos_ids.end(), tok) != req.eos_ids.end();
    const program::StopReason stop = program::stop_after_token(
        eos, !keep_going, int64_t(res.output.size()), req.max_tokens, prompt_len + int64_t(res.output.size()),
        fwd_.max_context());
    if (stop != program::StopReason::None) {
      res.stop_reason = program::stop_reason_name(stop);
      break;
    }
  }
  if (res.output.size() > 1) res.decode_ms_per_token = decode_ms / double(res.output.size() - 1);
  return res;
}

int64_t ReferenceBackend::cached_prefix(std::span<const int32_t> prompt) const {
  if (!prefix_reuse_ || prompt.empty()) return 0;
  return std::min(common_prefix(held_, prompt), int64_t(prompt.size()) - 1);
}

void ReferenceBackend::forget() {
  fwd_.reset();
  held_.clear();
}

std::vector<float> ReferenceBackend::score(std::span<const int32_t> ids) {
  KEEL_CHECK(!ids.empty(), "score: no tokens");
  forget();
  std::vector<float> logits = fwd_.forward(ids, /*all_logits=*/true);
  held_.assign(ids.begin(), ids.end());
  return logits;
}

}  // namespace keel::engine
