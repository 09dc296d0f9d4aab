// `keel bench`: decode speed on the GPU against the card's measured read
// bandwidth, per launch mode (megakernel, per-op kernels, CUDA graph).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "model_source.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/config.h"
#if KEEL_EXEC_CUDA_AVAILABLE
#include "exec/cuda/bench.h"
#endif

namespace keel::cli {

namespace {
struct BenchArgs {
  std::string model, config, launch = "megakernel", trace, dtype = "bf16";
  bool random_weights = false, json = false;
  int tokens = 256, batch = 1;
  int64_t context = 512;
};

int run_bench(const BenchArgs& a) {
#if KEEL_EXEC_CUDA_AVAILABLE
  namespace kc = exec::cuda;
  if (!kc::have_gpu()) fail("bench: no usable CUDA GPU on this machine");
  kc::BenchOptions opt;
  opt.context = a.context;
  opt.steps = a.tokens;
  opt.batch = a.batch;
  opt.trace_json = a.trace;
  opt.progress = !a.json;
  opt.random_dtype = a.dtype == "f32" ? DType::F32 : a.dtype == "f16" ? DType::F16 : DType::BF16;
  if (a.launch == "megakernel") opt.modes = {kc::LaunchMode::Megakernel};
  if (a.launch == "per-op") opt.modes = {kc::LaunchMode::PerOp};
  if (a.launch == "graph") opt.modes = {kc::LaunchMode::Graph};
  std::string name;
  kc::BenchReport rep;
  if (!a.config.empty()) {
    model::ModelConfig cfg = model::ModelConfig::load(a.config);
    name = a.config;
    rep = kc::bench_random(cfg, opt);
  } else {
    model::Model m = model::Model::load(a.model);
    name = a.model;
    rep = kc::bench_model(m, opt);
  }
  if (a.json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : rep.rows)
      rows.push_back({{"launch", std::string(kc::launch_mode_name(r.mode))}, {"ms_per_token", r.ms_per_token},
                      {"ms_p10", r.ms_p10}, {"ms_p90", r.ms_p90}, {"weight_GBps", r.weight_gbs},
                      {"pct_of_read_bw", r.pct_of_read_bw}});
    nlohmann::json j = {{"model", name}, {"gpu", rep.gpu}, {"sms", rep.sms}, {"read_bw_GBps", rep.read_bw_gbs},
                        {"bytes_per_token", rep.bytes_per_token}, {"floor_ms", rep.floor_ms},
                        {"tasks_per_step", rep.tasks_per_step}, {"context", a.context}, {"batch", a.batch},
                        {"first_timed_position", rep.first_position}, {"last_timed_position", rep.last_position},
                        {"rows", rows}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s", rep.table(name).c_str());
  }
  return 0;
#else
  fail("bench: this keel was built without CUDA (configure with -DKEEL_CUDA=ON on a machine with nvcc)");
#endif
}
}  // namespace

Command register_bench(CLI::App& root) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* c = root.add_subcommand("bench", "Measure decode ms/token and % of the GPU's read bandwidth");
  auto* m = c->add_option("--model", a->model, "Checkpoint folder")->transform(model_source());
  auto* f = c->add_option("--config", a->config, "A config.json (with --random-weights)")->check(CLI::ExistingFile);
  m->excludes(f);
  c->add_flag("--random-weights", a->random_weights, "Random weights of the config's shapes, made on the GPU");
  c->add_option("--dtype", a->dtype, "Dtype of the random weights")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))->capture_default_str();
  c->add_option("--tokens", a->tokens, "Decode steps to time (median over them, at least 128)")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  c->add_option("--context", a->context, "KV length the median timed step attends over (the timed steps are centred on it)")->check(kContextRange)->capture_default_str();
  c->add_option("--batch", a->batch, "Sequences per step")->check(CLI::Range(1, 1024))->capture_default_str();
  c->add_option("--launch", a->launch, "megakernel | per-op | graph | all")
      ->check(CLI::IsMember({"megakernel", "per-op", "graph", "all"}))->capture_default_str();
  c->add_flag("--json", a->json, "Print JSON");
  c->add_option("--trace", a->trace, "Write a per-SM timeline (Chrome/Perfetto JSON)");
  return {c, [a] {
            if (a->model.empty() && a->config.empty()) fail("bench: give --model DIR or --config FILE --random-weights");
            if (!a->config.empty() && !a->random_weights) fail("bench: --config needs --random-weights (no checkpoint to read)");
            return run_bench(*a);
          }};
}

}  // namespace keel::cli
