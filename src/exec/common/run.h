// The run contract every executor of a Program honours (cpu and cuda): what a
// caller asks for (sequences, run options) and what it gets back (tokens,
// optional logits, stop reasons, timings). The engine's backend adapters and
// the tests drive either executor through these types; launch_state.h writes
// the launch setup from them.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "program/program.h"
#include "program/sampling.h"

namespace keel::exec {

/// One sequence of a batch run.
struct Sequence {
  std::vector<int32_t> prompt;        // program::prompt_fits: 1 .. max_context tokens
  int32_t max_new = 16;               // tokens to generate at most (>= 1)
  program::SamplingParams sampling;   // temperature 0: greedy
  /// Positions [0, kv_filled) of the prompt are already in this sequence's KV
  /// cache (a prefill Program wrote them: exec/common/prefill.h; or an earlier
  /// run of the same tokens: engine/kv_pages.h), so a decode Program starts at
  /// position kv_filled (< prompt size), a prefill Program's lanes at kv_filled
  /// + lane.
  int32_t kv_filled = 0;
  /// The KV sequence (pages [kv_slot pages_per_seq, +pages_per_seq)) this
  /// sequence's lanes use; -1: its index in the run. A prefill run on a cache
  /// shared with the decode executor writes the slot the decode run reads.
  int32_t kv_slot = -1;
  /// The physical KV pages of this sequence's page-table row (pages_per_seq
  /// entries, each in [0, n_pages)), for a cache whose pages an allocator
  /// hands out (engine/kv_pages.h): pages may be shared by sequences that only
  /// read them (positions below every sharer's kv_filled). Empty: the pages of
  /// its KV slot (kv_slot).
  std::vector<int32_t> pages;
  /// Sampling draws made before this run (a generation resumed with its
  /// output so far appended to the prompt): the run's draws continue from
  /// there (SeqState::draw0).
  int32_t draws_before = 0;
  /// In a mixed Program (ProgramHeader::decode_lanes): this run only
  /// prefills the sequence's prompt positions [kv_filled, prompt size - 1) on
  /// a prefill group's lanes and emits nothing (a later run decodes it from
  /// kv_filled = prompt size - 1). Such sequences come after the run's
  /// decoding ones. Every sequence of a prefill Program is one; a decode
  /// Program has none.
  bool prefill_only = false;
  /// Report each generated token's log-probability (SeqState::want_logprob,
  /// program::token_logprob): SequenceOutput::logprobs and on_token's third
  /// argument.
  bool logprobs = false;
};

struct RunOptions {
  std::vector<int32_t> eos_ids;       // at most kMaxEos
  bool capture_logits = false;        // keep the logits of every processed position
  /// Called (serialised) for each generated token, with its log-probability
  /// when the sequence asked for them (Sequence::logprobs; else NaN); return
  /// false to stop the run at the next step.
  std::function<bool(int seq, int32_t token, float logprob)> on_token;
  double hang_seconds = 60;           // fail if no task can run for this long (cuda: caps the watchdog)
  /// The page every row of an idle lane (a slot past the run's sequences)
  /// points to: idle lanes append there (position 0) every step. -1: the
  /// slot's own pages. Runs whose sequences name their pages set it to a
  /// page none of them uses.
  int32_t idle_page = -1;
  /// > 0: the run stops after this many steps at most (Control::max_steps);
  /// its unfinished sequences end with StopReason::None, every position they
  /// ran in the cache (a mixed run that ends when its prefill does).
  int32_t max_steps = 0;
  // CPU executor only (the CUDA executor ignores them):
  int threads = 0;                    // host threads; 0: min(hardware threads, workers)
  bool shuffle = false;               // random ready worker next + random yields
  uint64_t shuffle_seed = 0;
  /// Called (serialised) after each step with the executor, to inspect buffers.
  std::function<void(int step)> on_step;
};

struct SequenceOutput {
  std::vector<int32_t> tokens;        // generated ids (an EOS that ended it included)
  std::vector<float> logprobs;        // Sequence::logprobs: each token's log-probability
  std::vector<float> logits;          // capture_logits: [positions, vocab], row t = after token kv_filled + t
  program::StopReason stop = program::StopReason::None;
};

struct RunResult {
  std::vector<SequenceOutput> seqs;
  int steps = 0;
  uint64_t tasks_run = 0;
  double ms = 0;
  double first_token_ms = 0;          // time until some sequence emitted its first token
  /// Sequences and positions of the Program the decoding ran on
  /// (engine::run_paged picks the first of a backend's decode Programs that
  /// holds the launch); 0: not said.
  int program_batch = 0;
  int64_t program_context = 0;
};

}  // namespace keel::exec
