// The CUDA executor's host side: uploads a model (or generates random weights
// of a config's shape on the GPU), plans per-SM task lists for the device's SM
// count (layout.h), and runs the decode loop in one of three launch modes:
//   * Megakernel: one cooperative launch runs every step (prefill as repeated
//     steps, then decode until EOS / max tokens / context end); tokens stream
//     to the host through pinned memory while it runs;
//   * PerOp: one kernel launch per stage (the same task code, no waits);
//   * Graph: the per-op launches of one step captured in a CUDA graph.
// A stalled megakernel is stopped by its watchdog; the host then throws
// keel::Error with every SM's task, awaited counter and its value.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "exec/cuda/layout.h"
#include "model/config.h"

namespace keel::model {
struct Model;
}

namespace keel::exec::cuda {

enum class LaunchMode { Megakernel, PerOp, Graph };
std::string_view launch_mode_name(LaunchMode m);

struct ExecutorOptions {
  int device = 0;
  int64_t max_context = 0;     // 0: min(model max_position, 4096)
  int workers = 0;             // CTAs (0: the device's SM count)
  double watchdog_s = 3.0;     // a wait with no progress this long stops the kernel
  int attn_chunks = 0;         // split-KV chunks per kv head (0: auto)
};

struct DecodeStats {
  std::vector<int32_t> tokens;   // generated ids
  std::string stop_reason;       // "eos", "max_tokens", "context", "stopped"
  double first_token_ms = 0;     // launch to the first generated token
  double decode_ms_per_token = 0;  // median step time after the first token
};

class Executor {
 public:
  /// Uploads `m`'s weights to the GPU.
  static std::unique_ptr<Executor> from_model(const model::Model& m, const ExecutorOptions& opt);
  /// Random bf16 weights of `cfg`'s shape, generated on the GPU (no checkpoint).
  static std::unique_ptr<Executor> random(const model::ModelConfig& cfg, const ExecutorOptions& opt,
                                          uint64_t seed = 1);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Megakernel decode: prefills `prompt` from position 0, then generates up to
  /// `max_new` tokens (greedy), stopping after an id in `eos`. `on_token` is
  /// called as each token arrives; returning false stops generation.
  DecodeStats generate(std::span<const int32_t> prompt, int32_t max_new,
                       std::span<const int32_t> eos,
                       const std::function<bool(int32_t)>& on_token = {});

  /// Runs `steps` decode steps from position `start_pos` (the KV cache below it
  /// must be filled: fill_kv_random) in `mode`, feeding back the argmax, and
  /// returns each step's time in ms. With `trace_json` set (megakernel only),
  /// writes a Chrome/Perfetto trace of every SM's tasks.
  std::vector<double> time_steps(LaunchMode mode, int start_pos, int steps,
                                 const std::string& trace_json = {});
  /// The argmax token of every step of the last time_steps() run, in order.
  const std::vector<int32_t>& last_step_tokens() const;
  /// Fills the KV cache below `upto` with random bf16 values.
  void fill_kv_random(int upto, uint64_t seed = 7);

  /// Test hook: runs a megakernel whose first task waits on a counter nothing
  /// signals; must end in the watchdog's keel::Error.
  void run_unsatisfiable_wait();

  int workers() const;
  int64_t max_context() const;
  const model::ModelConfig& config() const;
  /// Weight bytes streamed per token (every matrix once, plus one embedding row).
  uint64_t weight_bytes_per_token() const;
  /// Number of tasks in one step (all SMs).
  size_t tasks_per_step() const;
  /// Stage launches per step in per-op mode.
  int stages_per_step() const;

  struct Impl;

 private:
  explicit Executor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::exec::cuda
