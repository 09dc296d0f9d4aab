// The bench API behind `keel bench`: decode speed of one model (a checkpoint or
// random weights of a config's shape, made on the GPU) compiled into a Program
// for the device and run by the ProgramExecutor in each launch mode, against
// the streaming-read bandwidth measured in the same run. Every figure means
// something on its own: ms/token at `context` (the median over timed steps
// whose positions are centred on `context`: a step's cost grows with the
// positions it attends over, so the median step is the one at `context`),
// weight GB/s, and % of the measured bandwidth.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "compiler/compiler.h"
#include "core/dtype.h"
#include "exec/cuda/device_info.h"
#include "exec/cuda/program_executor.h"

namespace keel::model {
struct Model;
struct ModelConfig;
}  // namespace keel::model

namespace keel::exec::cuda {

struct BenchOptions {
  int64_t context = 512;      // KV length the middle timed step attends over (first_timed_position)
  int steps = 256;            // timed steps per mode (>= 128 recommended)
  int warmup = 16;            // steps dropped from the front
  int batch = 1;              // sequences per step
  std::vector<LaunchMode> modes = {LaunchMode::Megakernel, LaunchMode::PerOp, LaunchMode::Graph};
  std::string trace_json;     // megakernel per-SM timeline (Chrome/Perfetto JSON) of a separate 8-step launch, optional
  int device = 0;
  bool progress = false;      // one line on stderr per phase
  DType random_dtype = DType::BF16;  // bench_random: the weights' dtype (whatever the config declares)
  /// The Program's target (ring, loader policy, split-K choices; every field is
  /// a tuning knob, recorded in the Program and printed): unset = the device's
  /// (device_target, "auto").
  std::optional<compiler::Target> target;
  int o_split_k = 0;          // compile options (0: the target's, else the compiler's)
  int down_split_k = 0;
  int attn_chunks = 0;
  int attn_min_chunk = -1;    // CompileOptions::attn_min_chunk (-1: the compiler's)
  int row_align = 0;          // CompileOptions::row_align (0: the compiler's)
  /// > 0: also time the first token of `batch` prompts of this many tokens
  /// (random ids), one megakernel launch with one token to generate each:
  /// prefill (time to first token) as a user sees it.
  int64_t prompt_len = 0;
  /// Prompt positions per prefill step when timing prefill (exec/common/prefill.h):
  /// a prefill Program of this many lanes on the same weights; 0 or 1: the
  /// prompts run as decode steps. `keel bench`'s default, the cuda backend's
  /// (engine::CudaBackendOptions::kDefaultPrefillChunk).
  int prefill_chunk = 256;
};

struct BenchRow {
  LaunchMode mode;
  double ms_per_token = 0;    // median step time
  double ms_p10 = 0, ms_p90 = 0;
  double weight_gbs = 0;      // bytes_per_token / ms
  double pct_of_read_bw = 0;  // weight_gbs / read_bw_gbs
};

struct BenchReport {
  std::string gpu;
  int sms = 0;
  int batch = 1;
  double read_bw_gbs = 0;     // measured in the same run
  uint64_t bytes_per_token = 0;  // weight bytes per step
  double floor_ms = 0;        // bytes_per_token / read bandwidth
  size_t tasks_per_step = 0;
  int ring_stages = 0;
  uint32_t stage_bytes = 0;
  std::string program_hash;    // program::program_hash of the Program benched (16 hex digits)
  std::string kernel_variant;  // the kernel variant the timed megakernel steps ran (program_kernel.h)
  program::ProgramHeader header;  // its header: target (ring, loader policy) and compile options in force
  int64_t first_position = 0;  // the first timed step's position (after warm-up)
  int64_t last_position = 0;   // the last timed step's
  int64_t prompt_len = 0;      // BenchOptions::prompt_len
  int prefill_chunk = 0;       // lanes of the prefill Program timed (0: prompts ran as decode steps)
  double prefill_ms = 0;       // time to the first token of `batch` prompts of prompt_len tokens (0: not timed)
  std::string prefill_hash;    // the prefill Program's program_hash, and the kernel variant it ran on
  std::string prefill_variant;
  std::vector<BenchRow> rows;
  /// A small Markdown table.
  std::string table(const std::string& model_name) const;
};

/// Position of the first warm-up step, so that the timed steps
/// [first + warmup, first + warmup + steps) are centred on opt.context (at least 1).
int64_t first_bench_position(const BenchOptions& opt);

/// The compile options the bench uses for `cfg` (whose dtype must be the
/// weights'): opt's target (or the device's) and split options, batch, and
/// max_context = min(model context, 4096) unless the timed steps need more;
/// so `keel compile --target <the device> --context <that>` with the same
/// flags names the same Program. Moves opt.context when the steps around
/// it do not fit the model's context (said on stderr).
compiler::CompileOptions bench_compile_options(const model::ModelConfig& cfg, BenchOptions& opt);

/// Benches a loaded checkpoint. When the steps around opt.context do not fit the
/// model's context, or start before position 1, the window moves (said on stderr).
BenchReport bench_model(const model::Model& m, const BenchOptions& opt);
/// Benches random weights of `cfg`'s shapes (opt.random_dtype, generated on the GPU).
BenchReport bench_random(const model::ModelConfig& cfg, const BenchOptions& opt);
/// Benches an executor that already exists; prefill (opt.prompt_len > 0)
/// through `prefill`, a prefill Program's executor on the same weights, when given.
BenchReport bench_executor(ProgramExecutor& ex, const BenchOptions& opt, ProgramExecutor* prefill = nullptr);

}  // namespace keel::exec::cuda
