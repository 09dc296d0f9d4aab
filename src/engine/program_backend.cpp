// The request <-> run mapping of the Program backends (see program_backend.h).
#include "engine/program_backend.h"

#include "core/error.h"
#include "program/rules.h"

namespace keel::engine {

exec::Sequence sequence_for(const GenerateRequest& req, int64_t max_context, const char* who) {
  program::check_prompt_fits(int64_t(req.prompt.size()), max_context, who);
  KEEL_CHECK(req.max_tokens >= 1, who, ": max_tokens must be >= 1");
  KEEL_CHECK(req.eos_ids.size() <= size_t(program::kMaxEos), who, ": at most ", program::kMaxEos, " eos ids");
  exec::Sequence s;
  s.prompt = req.prompt;
  s.max_new = req.max_tokens;
  s.sampling = req.sampling;
  return s;
}

exec::Sequence score_sequence(std::span<const int32_t> ids, int64_t max_context, const char* who) {
  program::check_prompt_fits(int64_t(ids.size()), max_context, who);
  exec::Sequence s;
  s.prompt.assign(ids.begin(), ids.end());
  s.max_new = 1;
  return s;
}

GenerateResult result_of(const exec::RunResult& r, bool stopped) {
  GenerateResult g;
  g.output = r.seqs[0].tokens;
  g.prefill_ms = r.first_token_ms;
  const size_t n = g.output.size();
  g.decode_ms_per_token = n > 1 ? (r.ms - r.first_token_ms) / double(n - 1) : 0;
  const program::StopReason why = r.seqs[0].stop;
  g.stop_reason = why != program::StopReason::None ? program::stop_reason_name(why)
                  : stopped                         ? "stopped"
                                                    : "max_tokens";
  return g;
}

exec::RunOptions run_options_for(const GenerateRequest& req, const TokenCallback& on_token, bool* stopped) {
  exec::RunOptions ro;
  ro.eos_ids = req.eos_ids;
  if (on_token)
    ro.on_token = [on_token, stopped](int, int32_t tok) {
      if (!on_token(tok)) *stopped = true;
      return !*stopped;
    };
  return ro;
}

}  // namespace keel::engine
