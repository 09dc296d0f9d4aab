// bench.h: read bandwidth, then each launch mode's step times on one executor.
#include "exec/cuda/bench.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "exec/cuda/device_info.h"
#include "model/model.h"

namespace keel::exec::cuda {

BenchReport bench_executor(Executor& ex, const BenchOptions& opt) {
  KEEL_CHECK(opt.batch == 1, "cuda bench: batch ", opt.batch, " is not implemented (batch 1 only)");
  KEEL_CHECK(opt.steps >= 2, "cuda bench: need at least 2 steps");
  BenchReport r;
  auto gpus = list_gpus();
  KEEL_CHECK(!gpus.empty(), "cuda bench: no CUDA device");
  r.gpu = gpus[size_t(opt.device)].name;
  r.sms = gpus[size_t(opt.device)].sm_count;
  r.read_bw_gbs = measure_read_bandwidth(opt.device);
  r.bytes_per_token = ex.weight_bytes_per_token();
  r.floor_ms = double(r.bytes_per_token) / (r.read_bw_gbs * 1e9) * 1e3;
  r.tasks_per_step = ex.tasks_per_step();
  const int total = opt.steps + opt.warmup;
  KEEL_CHECK(opt.context + total <= ex.max_context(), "cuda bench: context ", opt.context, " + ", total,
             " steps exceed the executor's context ", ex.max_context());
  ex.fill_kv_random(int(opt.context));
  for (LaunchMode mode : opt.modes) {
    std::vector<double> ms = ex.time_steps(mode, int(opt.context), total,
                                           mode == LaunchMode::Megakernel ? opt.trace_json : "");
    if (int(ms.size()) > opt.warmup) ms.erase(ms.begin(), ms.begin() + opt.warmup);
    std::sort(ms.begin(), ms.end());
    BenchRow row;
    row.mode = mode;
    row.ms_per_token = ms[ms.size() / 2];
    row.ms_p10 = ms[ms.size() / 10];
    row.ms_p90 = ms[ms.size() * 9 / 10];
    row.weight_gbs = double(r.bytes_per_token) / (row.ms_per_token * 1e-3) / 1e9;
    row.pct_of_read_bw = 100.0 * row.weight_gbs / r.read_bw_gbs;
    r.rows.push_back(row);
  }
  return r;
}

BenchReport bench_model(const model::Model& m, const BenchOptions& opt) {
  ExecutorOptions eo;
  eo.device = opt.device;
  eo.max_context = opt.context + opt.steps + opt.warmup + 8;
  auto ex = Executor::from_model(m, eo);
  return bench_executor(*ex, opt);
}

BenchReport bench_random(const model::ModelConfig& cfg, const BenchOptions& opt) {
  ExecutorOptions eo;
  eo.device = opt.device;
  eo.max_context = opt.context + opt.steps + opt.warmup + 8;
  auto ex = Executor::random(cfg, eo);
  return bench_executor(*ex, opt);
}

std::string BenchReport::table(const std::string& model_name) const {
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s on %s (%d SMs): %.3f GB/token, read bandwidth %.0f GB/s, floor %.3f ms/token\n",
                model_name.c_str(), gpu.c_str(), sms, bytes_per_token / 1e9, read_bw_gbs, floor_ms);
  s += buf;
  s += "| mode | ms/token (p50) | p10 | p90 | weight GB/s | % of read bw |\n|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "| %s | %.4f | %.4f | %.4f | %.0f | %.1f |\n",
                  std::string(launch_mode_name(r.mode)).c_str(), r.ms_per_token, r.ms_p10, r.ms_p90,
                  r.weight_gbs, r.pct_of_read_bw);
    s += buf;
  }
  return s;
}

}  // namespace keel::exec::cuda
