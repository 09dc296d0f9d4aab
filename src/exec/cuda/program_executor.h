// The CUDA executor of compiler::Program (DESIGN invariant 1: the CPU and the
// GPU run the same Program). The host uploads the Program's arrays as they are,
// binds every weight buffer by name to a device copy of the checkpoint tensor,
// allocates the workspace / KV / constants arenas at the Program's offsets,
// does the launch setup of program.h (counters, page table, Control, SeqState,
// token history, first embedding) and runs prefill + decode in one persistent
// launch (program_kernel.cu): one CTA per worker, every CTA walking its worker
// list step after step. Generated tokens stream to the host through a pinned
// ring while the kernel runs. A stalled kernel is stopped by its watchdog and
// reported as keel::Error with every CTA's state.
//
// The run interface is the CPU executor's (exec::cpu::Sequence / RunOptions /
// RunResult), so tests and the engine drive either executor the same way.
// Plain host header: no CUDA includes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "compiler/program.h"
#include "exec/cpu/executor.h"
#include "model/model.h"

namespace keel::exec::cuda {

struct ProgramExecutorOptions {
  int device = 0;
  /// false: a Program compiled for another worker count than the device's SM
  /// count is recompiled for the SM count (same batch, context, page size,
  /// ring). true: keep it (tests use this to run W = 1, 3, 7 ...); it must then
  /// fit co-resident on the device.
  bool keep_worker_count = false;
  double watchdog_s = 5.0;  // a wait that sees no progress this long stops the kernel
};

class ProgramExecutor {
 public:
  /// Uploads `m`'s weights named by the Program (shapes checked as the CPU
  /// executor does) and allocates the arenas. Throws keel::Error when there is
  /// no device, the weights + KV + workspace do not fit the free GPU memory, or
  /// the Program does not match the model.
  ProgramExecutor(const compiler::Program& p, const model::Model& m, const ProgramExecutorOptions& opt = {});
  ~ProgramExecutor();
  ProgramExecutor(const ProgramExecutor&) = delete;
  ProgramExecutor& operator=(const ProgramExecutor&) = delete;

  /// Runs up to B sequences to completion in one launch. Honoured options:
  /// capture_logits, eos_ids, on_token (called from this thread as tokens
  /// arrive; false stops the run at the next step), hang_seconds (overrides the
  /// watchdog when > 0 and smaller). threads / shuffle / on_step are CPU-only
  /// and ignored.
  cpu::RunResult run(const std::vector<cpu::Sequence>& seqs, const cpu::RunOptions& opt);

  /// The Program this executor runs (recompiled for the SM count if it had to be).
  const compiler::Program& program() const { return p_; }
  /// True when the constructor recompiled the given Program.
  bool recompiled() const { return recompiled_; }
  int workers() const { return int(p_.h.n_workers); }

  /// The current bytes of buffer `id` (workspace, KV, constant or weight), copied from the device.
  std::vector<uint8_t> download_buffer(int32_t id) const;
  /// Whole arenas, for tests that set up a state and compare it after a task.
  std::vector<uint8_t> download_workspace() const;
  std::vector<uint8_t> download_kv() const;
  void upload_workspace(const std::vector<uint8_t>& bytes);
  void upload_kv(const std::vector<uint8_t>& bytes);
  /// Test hook: runs task `task` once on one CTA at step 0 with no waits and
  /// no signals, on the current device buffers (a tiny test kernel).
  void run_single_task(uint32_t task);

 private:
  struct Impl;
  compiler::Program p_;
  bool recompiled_ = false;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::exec::cuda
