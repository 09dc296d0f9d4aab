// `keel bench`: decode speed on the GPU against the card's measured read
// bandwidth, per launch mode (megakernel, per-op kernels, CUDA graph). The
// Program is compiled for --target (default: this GPU) with the tuning flags
// of target_flags.h; the output names its hash and every option in force.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "model_source.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/config.h"
#include "target_flags.h"
#if KEEL_EXEC_CUDA_AVAILABLE
#include "exec/cuda/bench.h"
#endif

namespace keel::cli {

namespace {
struct BenchArgs {
  std::string model, config, launch = "megakernel", trace, dtype = "bf16";
  bool random_weights = false, json = false;
  int tokens = 256, batch = 1, prefill_chunk = 256;  // the cuda backend's default (CudaBackendOptions)
  int64_t context = 512, prompt_len = 0;
  TargetFlags target;
};

int run_bench(const BenchArgs& a) {
#if KEEL_EXEC_CUDA_AVAILABLE
  namespace kc = exec::cuda;
  if (!kc::have_gpu()) fail("bench: no usable CUDA GPU on this machine");
  kc::BenchOptions opt;
  opt.context = a.context;
  opt.steps = a.tokens;
  opt.batch = a.batch;
  opt.prompt_len = a.prompt_len;
  opt.prefill_chunk = a.prefill_chunk;
  opt.trace_json = a.trace;
  opt.progress = !a.json;
  opt.random_dtype = a.dtype == "f32" ? DType::F32 : a.dtype == "f16" ? DType::F16 : DType::BF16;
  if (a.launch == "megakernel") opt.modes = {kc::LaunchMode::Megakernel};
  if (a.launch == "per-op") opt.modes = {kc::LaunchMode::PerOp};
  if (a.launch == "graph") opt.modes = {kc::LaunchMode::Graph};
  opt.target = resolve_target(a.target, opt.device);
  opt.o_split_k = a.target.o_split_k;
  opt.down_split_k = a.target.down_split_k;
  opt.attn_chunks = a.target.attn_chunks;
  opt.attn_min_chunk = a.target.attn_min_chunk;
  opt.row_align = a.target.row_align;
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
    const program::TargetDesc& t = rep.header.target;
    const program::OptionsDesc& o = rep.header.options;
    // Every tuning option in force: the Program's target (resolved) and compile options.
    nlohmann::json target = {{"name", program::target_name(rep.header)}, {"sms", t.sms},
                             {"smem_per_block", t.smem_per_block}, {"static_smem_reserve", t.static_smem},
                             {"stage_bytes", t.stage_bytes}, {"stages", t.n_stages}, {"max_stages", t.max_stages},
                             {"work_bytes", t.work_bytes}, {"dynamic_smem", t.dynamic_smem},
                             {"max_inflight", t.max_inflight}, {"loader_hold", t.loader_hold},
                             {"l2_evict_first", t.l2_evict_first}, {"o_split_k", t.o_split_k},
                             {"down_split_k", t.down_split_k},
                             {"mm_engine", t.mm_engine == program::kMmEngineWgmma ? "wgmma" : "mma"}, {"row_align", t.row_align},
                             {"mm_cols", t.mm_cols}, {"mm_tokens", t.mm_tokens}, {"attn_seqs", t.attn_seqs > 0 ? t.attn_seqs : 1}};
    nlohmann::json options = {{"workers", rep.header.n_workers}, {"batch", o.batch}, {"max_context", o.max_context},
                              {"page_size", o.page_size}, {"ring_len", o.ring_len}, {"row_align", o.row_align},
                              {"o_split_k", o.o_split_k}, {"down_split_k", o.down_split_k},
                              {"attn_chunks", o.attn_chunks}, {"n_chunks", rep.header.n_chunks},
                              {"attn_min_chunk", rep.header.attn_min_chunk},
                              {"weight_dtype", std::string(dtype_name(DType(o.weight_dtype)))},
                              {"bandwidth_GBps", o.bandwidth_GBps}, {"task_overhead_us", o.task_overhead_us},
                              {"predict_context", o.predict_context}, {"attn_task_us", o.attn_task_us},
                              {"kv_append_us", o.kv_append_us}, {"prune_transitive", o.prune_transitive}};
    nlohmann::json j = {{"model", name}, {"gpu", rep.gpu}, {"sms", rep.sms}, {"read_bw_GBps", rep.read_bw_gbs},
                        {"program_hash", rep.program_hash}, {"kernel_variant", rep.kernel_variant}, {"compile_flags", compile_flags_of(rep.header)},
                        {"target", target}, {"compile_options", options},
                        {"bytes_per_token", rep.bytes_per_token}, {"floor_ms", rep.floor_ms},
                        {"tasks_per_step", rep.tasks_per_step}, {"context", a.context}, {"batch", a.batch},
                        {"first_timed_position", rep.first_position}, {"last_timed_position", rep.last_position},
                        {"rows", rows}};
    if (rep.prompt_len > 0) j["prefill"] = {{"prompt_len", rep.prompt_len}, {"prompts", a.batch}, {"ms", rep.prefill_ms},
                                          {"prefill_chunk", rep.prefill_chunk}, {"program_hash", rep.prefill_hash},
                                          {"kernel_variant", rep.prefill_variant}};
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
  c->add_option("--prompt-len", a->prompt_len,
                "Also time the first token of --batch prompts of this many tokens (prefill, one launch)")
      ->check(kContextRange);
  c->add_option("--prefill-chunk", a->prefill_chunk,
                "With --prompt-len: prompt positions per prefill step (a prefill Program of this many lanes); "
                "0 = the prompts run as decode steps")
      ->check(CLI::Range(0, 4096))->capture_default_str();
  c->add_option("--launch", a->launch, "megakernel | per-op | graph | all")
      ->check(CLI::IsMember({"megakernel", "per-op", "graph", "all"}))->capture_default_str();
  c->add_flag("--json", a->json, "Print JSON");
  c->add_option("--trace", a->trace, "Write a per-SM timeline (Chrome/Perfetto JSON) of 8 megakernel steps; with --prompt-len also one of the prefill launch's first 4 steps (X.json -> X.prefill.json)");
  add_target_flags(*c, a->target, "auto");
  return {c, [a] {
            if (a->model.empty() && a->config.empty()) fail("bench: give --model DIR or --config FILE --random-weights");
            if (!a->config.empty() && !a->random_weights) fail("bench: --config needs --random-weights (no checkpoint to read)");
            return run_bench(*a);
          }};
}

}  // namespace keel::cli
