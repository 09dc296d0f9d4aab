// Chunked prefill: a run of a decode Program whose prompts first go through a
// prefill Program of the same model (ProgramHeader::seq_lanes: T lanes of one
// sequence, T prompt positions per step, every weight tile streamed once per
// step for all of them). Each long prompt's positions [kv_filled, P - 1) are
// written into the sequence's slot of the decode executor's KV cache (the
// prefill executor shares it: Sequence::kv_slot; an executor with a cache of
// its own gets the first kv_filled positions copied from it and has them all
// copied back), and the decode launch starts at position P - 1
// (Sequence::kv_filled): it runs the prompt's last position and samples
// from there exactly as it would have after running the whole prompt, so the
// tokens are the same (up to the order of fp32 sums) and the sampling draws
// are the same ones.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "exec/common/run.h"

namespace keel::exec {

/// Prompts with fewer than this many positions before their last token decode
/// them one a step: a prefill step of T lanes costs several decode steps
/// (H200, batch 64 against batch 1: about 7x for Qwen3-8B, 10x for
/// Llama-3.2-1B), so a short prompt gains nothing.
inline constexpr int64_t kMinPrefillPositions = 16;

/// Prefills sequence `k` of a run of `decode` on `prefill` when its prompt has
/// at least kMinPrefillPositions positions past its kv_filled: the prefill
/// Program writes positions [kv_filled, P - 1) and then s.kv_filled = P - 1.
/// Where it writes: the pages the sequence names (Sequence::pages; the two
/// executors must share one cache), else sequence k's KV slot of a shared
/// cache, else the prefill executor's own slot 0, copied over (its first
/// kv_filled positions copied there first). Returns whether it ran.
/// Exec: exec::cpu::CpuExecutor or exec::cuda::ProgramExecutor (run(),
/// shares_kv_with(), copy_kv_to()).
template <class Exec>
bool prefill_sequence(Exec& decode, Exec& prefill, Sequence& s, int k, const RunOptions& opt) {
  const int64_t n = int64_t(s.prompt.size()) - 1;  // positions [kv_filled, n) the prefill Program writes
  if (n - s.kv_filled < kMinPrefillPositions) return false;
  const bool shared = prefill.shares_kv_with(decode);
  KEEL_CHECK(shared || s.pages.empty(), "prefill: a sequence that names its KV pages needs one cache for both "
             "executors");
  Sequence one = s;
  one.max_new = 1;
  if (s.pages.empty()) one.kv_slot = shared ? int32_t(k) : 0;
  if (!shared && s.kv_filled > 0) decode.copy_kv_to(prefill, 0, k, s.kv_filled);  // the prefix it attends to
  RunOptions po;
  po.hang_seconds = opt.hang_seconds;
  po.threads = opt.threads;
  po.shuffle = opt.shuffle;
  po.shuffle_seed = opt.shuffle_seed + uint64_t(k);
  prefill.run({one}, po);
  if (!shared) prefill.copy_kv_to(decode, k, 0, n);
  s.kv_filled = int32_t(n);
  return true;
}

/// Sets up `s`, a decoding sequence that a run stopped unfinished after
/// `steps` steps (RunOptions::max_steps; StopReason::None) having emitted
/// `tokens`, to go on in the next run where it stopped: the tokens join the
/// prompt, kv_filled moves on by the positions it ran (one a step), max_new
/// and draws_before by the tokens. The same pages (Sequence::pages) hold its
/// cache.
inline void continue_sequence(Sequence& s, const std::vector<int32_t>& tokens, int steps) {
  KEEL_CHECK(int64_t(tokens.size()) < s.max_new && steps >= 0, "continue_sequence: a finished sequence (",
             tokens.size(), " of ", s.max_new, " tokens)");
  s.prompt.insert(s.prompt.end(), tokens.begin(), tokens.end());
  s.kv_filled += steps;
  KEEL_CHECK(s.kv_filled < int64_t(s.prompt.size()), "continue_sequence: ", steps, " steps ran past the ",
             s.prompt.size(), " positions of the prompt and output");
  s.max_new -= int32_t(tokens.size());
  s.draws_before += int32_t(tokens.size());
}

/// Runs `seqs` on `decode` after prefilling each prompt of at least
/// kMinPrefillPositions + 1 tokens on `prefill` (prefill_sequence, one run per
/// sequence; none when `prefill` is null or logits are captured: every
/// position's logits come from the decode Program). RunResult::ms and
/// first_token_ms include the prefill runs (and the KV copies, for a prefill
/// executor with its own cache).
template <class Exec>
RunResult run_prefilled(Exec& decode, Exec* prefill, std::vector<Sequence> seqs, const RunOptions& opt) {
  if (prefill == nullptr || opt.capture_logits) return decode.run(seqs, opt);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t k = 0; k < seqs.size(); ++k) prefill_sequence(decode, *prefill, seqs[k], int(k), opt);
  const double pre_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  RunResult r = decode.run(seqs, opt);
  r.ms += pre_ms;
  r.first_token_ms += pre_ms;
  return r;
}

}  // namespace keel::exec
