// The CUDA executor of program::Program (DESIGN invariant 1: the CPU and the
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
// Launch modes (the ablations of `keel bench`): the persistent megakernel; one
// kernel launch per operator of the Program (per-op, the same task code with
// no waits); and those launches captured in a CUDA graph.
//
// The run interface is the executors' common contract (exec/common/run.h:
// Sequence / RunOptions / RunResult), so tests and the engine drive either
// executor the same way.
// Plain host header: no CUDA includes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "program/program.h"
#include "exec/common/run.h"
#include "compiler/compiler.h"
#include "model/model.h"

namespace keel::exec::cuda {

enum class LaunchMode { Megakernel, PerOp, Graph };
std::string_view launch_mode_name(LaunchMode m);

struct ProgramExecutorOptions {
  int device = 0;
  /// false: the Program's worker count must be the device's SM count. true: a
  /// Program for fewer workers runs as is (tests run W = 1, 3, 7); it must
  /// still fit co-resident. Either way a Program that does not fit the device
  /// is an error (plan_check.h), never recompiled here.
  bool keep_worker_count = false;
  double watchdog_s = 5.0;  // a wait that sees no progress this long stops the kernel
};

class ProgramExecutor {
 public:
  /// Uploads `m`'s weights named by the Program (shapes checked as the CPU
  /// executor does) and allocates the arenas. The Program is run as compiled:
  /// its ring, shared-memory layout, loader policy and tiles (ProgramHeader::
  /// target, stage_rows()). Throws keel::Error when there is no device, the
  /// Program's target does not fit the device (check_program_fits: recompile
  /// it for the device), the weights + KV + workspace do not fit the free GPU
  /// memory, or the Program does not match the model.
  ProgramExecutor(const program::Program& p, const model::Model& m, const ProgramExecutorOptions& opt = {});
  /// Random weights of `cfg`'s shapes in the Program's declared dtype, generated
  /// on the GPU (no checkpoint): the Program is compiled from `cfg` with `co`
  /// as given (its target must fit the device).
  ProgramExecutor(const model::ModelConfig& cfg, const compiler::CompileOptions& co, uint64_t seed,
                  const ProgramExecutorOptions& opt = {});
  /// Runs `p` (a Program of the same model, e.g. its prefill Program) on the
  /// weights `weights_of` uploaded (matched by name; counts checked): no second
  /// copy. `weights_of` must outlive this executor. Its own workspace; with
  /// `share_kv`, `weights_of`'s KV cache too (the Programs' KV buffers must
  /// match: compile p with kv_sequences = the other's; a run names the pages
  /// through Sequence::kv_slot). Runs of the two must not overlap.
  ProgramExecutor(const program::Program& p, const ProgramExecutor& weights_of, const ProgramExecutorOptions& opt = {},
                  bool share_kv = false);
  /// Whether this executor and `other` use one KV cache.
  bool shares_kv_with(const ProgramExecutor& other) const;
  ~ProgramExecutor();
  ProgramExecutor(const ProgramExecutor&) = delete;
  ProgramExecutor& operator=(const ProgramExecutor&) = delete;

  /// Runs up to B sequences to completion in one launch. Honoured options:
  /// capture_logits, eos_ids, on_token (called from this thread as tokens
  /// arrive; false stops the run at the next step), hang_seconds (overrides the
  /// watchdog when > 0 and smaller). threads / shuffle / on_step are CPU-only
  /// and ignored.
  RunResult run(const std::vector<Sequence>& seqs, const RunOptions& opt);

  /// Copies positions [0, positions) of sequence `from`'s K/V cache into
  /// sequence `to` of `dst`'s (exec::kv_sequence_copies; device to device),
  /// e.g. a prefill run's cache into the decode executor's before a run with
  /// Sequence::kv_filled = positions.
  void copy_kv_to(ProgramExecutor& dst, int to, int from, int64_t positions) const;
  /// Copies whole KV pages within this executor's cache (every layer's K and
  /// V): page `to` gets page `from`'s content, for each pair in order.
  void copy_kv_pages(const std::vector<std::pair<int32_t, int32_t>>& from_to);
  /// Bench: fills the whole KV arena with random bf16 values.
  void fill_kv_random(uint64_t seed = 7);
  /// Bench: `steps` greedy decode steps of every sequence from position
  /// `start_pos` (the KV cache below it as it is, e.g. fill_kv_random) in
  /// `mode`; returns each step's time in ms (steps - 1 values). With
  /// `trace_json` (megakernel), writes a Chrome/Perfetto trace of every CTA's
  /// tasks (start, wait end, end).
  std::vector<double> time_steps(LaunchMode mode, int start_pos, int steps, const std::string& trace_json = {});
  /// Bench: the next run() also writes the trace time_steps() writes (its
  /// first 4 steps, every CTA's tasks) to `trace_json`, e.g. a prefill launch's.
  void trace_next_run(const std::string& trace_json);
  /// The kernel variant the last launch ran ("decode", "decode_long", "batch",
  /// "batch_long": program_kernel.h), "" before any.
  std::string last_kernel_variant() const;
  /// The tokens of sequence 0 of the last time_steps() run, one per step.
  const std::vector<int32_t>& last_step_tokens() const;
  /// Weight bytes streamed per step (every task's tile, in the stored dtype).
  uint64_t weight_bytes_per_step() const;
  int ring_stages() const;
  uint32_t stage_bytes() const;
  const std::string& device_name() const;

  /// The Program this executor runs, exactly as given (or compiled from `co`).
  const program::Program& program() const { return p_; }
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
  /// Test hook: sets every counter to `value` (e.g. so that the next Attention
  /// task to arrive is the last of its step and merges).
  void set_counters(uint32_t value);

  struct Impl;  // host state (executor_impl.h)

 private:
  void setup(const model::Model* m, const ProgramExecutorOptions& opt, uint64_t seed,
             const ProgramExecutor* weights_of = nullptr, bool share_kv = false);
  program::Program p_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::exec::cuda
