// The CPU executor: runs a Program exactly as the GPU does — W logical workers,
// each walking its task list step after step, waiting on and signalling
// monotonic counters (std::atomic, acquire/release), with the step gate between
// steps — multiplexed on a few threads. Any ready worker may run next; in
// shuffle mode the choice is random (seeded) and threads yield at random, so a
// missing dependency shows up as a wrong answer. It is the oracle for the CUDA
// executor and the engine behind `keel generate --backend cpu`.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "program/program.h"
#include "engine/sampling.h"
#include "exec/cpu/tasks.h"
#include "model/model.h"

namespace keel::exec::cpu {

/// One sequence of a batch run.
struct Sequence {
  std::vector<int32_t> prompt;      // non-empty, at most max_context tokens
  int32_t max_new = 16;             // tokens to generate at most (>= 1)
  engine::SamplingParams sampling;  // temperature 0: greedy
};

struct RunOptions {
  int threads = 0;                  // host threads; 0: min(hardware threads, workers)
  bool shuffle = false;             // random ready worker next + random yields
  uint64_t shuffle_seed = 0;
  bool capture_logits = false;      // keep the logits of every processed position
  std::vector<int32_t> eos_ids;     // at most kMaxEos
  /// Called (serialised) for each generated token; return false to stop the run
  /// at the next step.
  std::function<bool(int seq, int32_t token)> on_token;
  /// Called (serialised) after each step with the executor, to inspect buffers.
  std::function<void(int step)> on_step;
  double hang_seconds = 60;         // fail if no task can run for this long
};

struct SequenceOutput {
  std::vector<int32_t> tokens;      // generated ids (an EOS that ended it included)
  std::vector<float> logits;        // capture_logits: [positions, vocab], row t = after token t
  program::StopReason stop = program::StopReason::None;
};

struct RunResult {
  std::vector<SequenceOutput> seqs;
  int steps = 0;
  uint64_t tasks_run = 0;
  double ms = 0;
  double first_token_ms = 0;        // time until some sequence emitted its first token
};

class CpuExecutor {
 public:
  /// Binds the Program's weight buffers to the model's tensors by name (shape
  /// and count checked) and allocates the workspace and KV arenas.
  CpuExecutor(const program::Program& p, const model::Model& m);
  ~CpuExecutor();
  CpuExecutor(const CpuExecutor&) = delete;
  CpuExecutor& operator=(const CpuExecutor&) = delete;

  /// Runs up to B sequences (the Program's batch) to completion.
  RunResult run(const std::vector<Sequence>& seqs, const RunOptions& opt);

  const program::Program& program() const { return p_; }
  /// The bytes of buffer `id` (workspace, KV, constant or bound weight).
  const uint8_t* buffer_data(int32_t id) const { return ctx_.ptr.at(size_t(id)); }

 private:
  struct Impl;
  const program::Program& p_;
  std::vector<uint64_t> workspace_, kv_;  // 8-byte aligned arenas
  TaskContext ctx_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::exec::cpu
