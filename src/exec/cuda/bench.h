// The bench API behind `keel bench`: decode speed of one model (a checkpoint or
// random weights of a config's shape, made on the GPU) per launch mode, against
// the streaming-read bandwidth measured in the same run. Every figure means
// something on its own: ms/token (median over the timed steps after warm-up,
// with the KV cache filled to `context`), weight GB/s, and % of the measured
// bandwidth.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "exec/cuda/device_info.h"
#include "exec/cuda/executor.h"

namespace keel::model {
struct Model;
}

namespace keel::exec::cuda {

struct BenchOptions {
  int64_t context = 512;      // KV length the timed steps attend over
  int steps = 256;            // timed steps per mode (>= 128 recommended)
  int warmup = 16;            // steps dropped from the front
  int batch = 1;              // only 1 is implemented
  std::vector<LaunchMode> modes = {LaunchMode::Megakernel, LaunchMode::PerOp, LaunchMode::Graph};
  std::string trace_json;     // megakernel per-SM timeline (Chrome/Perfetto JSON), optional
  int device = 0;
};

struct BenchRow {
  LaunchMode mode;
  double ms_per_token = 0;    // median
  double ms_p10 = 0, ms_p90 = 0;
  double weight_gbs = 0;      // bytes_per_token / ms
  double pct_of_read_bw = 0;  // weight_gbs / read_bw_gbs
};

struct BenchReport {
  std::string gpu;
  int sms = 0;
  double read_bw_gbs = 0;     // measured in the same run
  uint64_t bytes_per_token = 0;
  double floor_ms = 0;        // bytes_per_token / read bandwidth
  size_t tasks_per_step = 0;
  std::vector<BenchRow> rows;
  /// A small Markdown table.
  std::string table(const std::string& model_name) const;
};

/// Benches a loaded checkpoint.
BenchReport bench_model(const model::Model& m, const BenchOptions& opt);
/// Benches random bf16 weights of `cfg`'s shapes (generated on the GPU).
BenchReport bench_random(const model::ModelConfig& cfg, const BenchOptions& opt);
/// Benches an executor that already exists.
BenchReport bench_executor(Executor& ex, const BenchOptions& opt);

}  // namespace keel::exec::cuda
