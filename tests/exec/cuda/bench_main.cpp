// keel_cuda_bench: the CUDA bench API (ProgramExecutor) from the command line, for
// scripts/device_run.sh (RESULT lines to parse; `keel bench` is the user-facing twin).
//   keel_cuda_bench (--config FILE | --model DIR) [--name NAME] [--context 512]
//                   [--steps 256] [--modes megakernel,per-op,graph] [--trace FILE]
#include <cstdio>
#include <cstring>
#include <string>

#include "core/error.h"
#include "exec/cuda/bench.h"
#include "model/config.h"
#include "model/model.h"

using namespace keel;
using namespace keel::exec::cuda;

int main(int argc, char** argv) {
  std::string config, model_dir, name, modes = "megakernel,per-op,graph";
  BenchOptions opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) fail("missing value after ", a);
      return argv[++i];
    };
    if (a == "--config") config = next();
    else if (a == "--model") model_dir = next();
    else if (a == "--name") name = next();
    else if (a == "--context") opt.context = std::stoll(next());
    else if (a == "--steps") opt.steps = std::stoi(next());
    else if (a == "--modes") modes = next();
    else if (a == "--trace") opt.trace_json = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    opt.modes.clear();
    if (modes.find("megakernel") != std::string::npos) opt.modes.push_back(LaunchMode::Megakernel);
    if (modes.find("per-op") != std::string::npos) opt.modes.push_back(LaunchMode::PerOp);
    if (modes.find("graph") != std::string::npos) opt.modes.push_back(LaunchMode::Graph);
    BenchReport r;
    if (!config.empty()) {
      auto cfg = model::ModelConfig::load(config);
      if (name.empty()) name = config;
      r = bench_random(cfg, opt);
    } else {
      auto m = model::Model::load(model_dir);
      if (name.empty()) name = model_dir;
      r = bench_model(m, opt);
    }
    std::printf("%s", r.table(name).c_str());
    for (const auto& row : r.rows)
      std::printf("RESULT %s %s %.4f %.1f %.0f %.3f\n", name.c_str(),
                  std::string(launch_mode_name(row.mode)).c_str(), row.ms_per_token, row.pct_of_read_bw,
                  r.read_bw_gbs, r.bytes_per_token / 1e9);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keel_cuda_bench: %s\n", e.what());
    return 1;
  }
}
