// bench.h: read bandwidth, then each launch mode's step times on one executor.
#include "exec/cuda/bench.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "compiler/compiler.h"
#include "core/error.h"
#include "exec/common/prefill.h"
#include "exec/cuda/device_info.h"
#include "exec/cuda/plan_check.h"
#include "model/model.h"
#include "program/serialize.h"
#include "program/smem_plan.h"

namespace keel::exec::cuda {

namespace {

void note(const BenchOptions& opt, const std::string& what) {
  if (opt.progress) std::fprintf(stderr, "bench: %s\n", what.c_str());
}

/// Where --trace puts the prefill launch's trace: "x.json" -> "x.prefill.json".
std::string prefill_trace_path(const std::string& trace_json) {
  const size_t dot = trace_json.rfind('.');
  const bool ext = dot != std::string::npos && trace_json.find('/', dot) == std::string::npos;
  return (ext ? trace_json.substr(0, dot) : trace_json) + ".prefill" + (ext ? trace_json.substr(dot) : ".json");
}

/// The prefill Program's executor on ex's weights when prefill is timed in chunks.
std::unique_ptr<ProgramExecutor> prefill_executor(const model::ModelConfig& cfg, const ProgramExecutor& ex,
                                                  const BenchOptions& opt, const ProgramExecutorOptions& eo) {
  if (opt.prompt_len <= 0 || opt.prefill_chunk <= 1) return nullptr;
  // The decode Program's options, but the target as given (or the device's),
  // not the decode Program's plan of it: a prefill Program takes the target's
  // wide batch ring (compiler::Target::batch_wide_stage_bytes).
  compiler::CompileOptions po = compiler::options_of(ex.program());
  po.target = opt.target ? *opt.target : device_target(opt.device);
  po.batch = 1;
  po.prefill_chunk = opt.prefill_chunk;
  po.attn_chunks = 0;
  po.kv_sequences = ex.program().h.batch;  // ex's cache, shared
  note(opt, cat("compiling the prefill Program (", opt.prefill_chunk, " lanes)"));
  return std::make_unique<ProgramExecutor>(compiler::compile(cfg, po), ex, eo, true);
}

}  // namespace

int64_t first_bench_position(const BenchOptions& opt) {
  return std::max<int64_t>(1, opt.context - opt.warmup - opt.steps / 2);
}

compiler::CompileOptions bench_compile_options(const model::ModelConfig& cfg, BenchOptions& opt) {
  KEEL_CHECK(opt.steps >= 2, "cuda bench: need at least 2 steps");
  KEEL_CHECK(opt.context >= 1, "cuda bench: context must be >= 1");
  const int64_t total = opt.steps + opt.warmup, margin = 8;
  KEEL_CHECK(cfg.max_position > total + margin, "cuda bench: ", total, " steps do not fit the model's context of ",
             cfg.max_position);
  const int64_t end = first_bench_position(opt) + total + margin;
  if (end > cfg.max_position) {
    const int64_t moved = opt.context - (end - cfg.max_position);
    std::fprintf(stderr, "bench: %lld steps around context %lld exceed the model's %lld positions; timing around %lld\n",
                 (long long)total, (long long)opt.context, (long long)cfg.max_position, (long long)moved);
    opt.context = moved;
  }
  compiler::CompileOptions co;
  co.target = opt.target ? *opt.target : device_target(opt.device);
  co.batch = opt.batch;
  co.max_context = int(std::max<int64_t>({std::min<int64_t>(cfg.max_position, program::kShortContext),
                                          first_bench_position(opt) + total + margin, opt.prompt_len + margin}));
  co.o_split_k = opt.o_split_k;
  co.down_split_k = opt.down_split_k;
  co.attn_chunks = opt.attn_chunks;
  co.attn_min_chunk = opt.attn_min_chunk;
  if (opt.row_align > 0) co.row_align = opt.row_align;
  return co;
}

BenchReport bench_executor(ProgramExecutor& ex, const BenchOptions& opt, ProgramExecutor* prefill) {
  KEEL_CHECK(opt.steps >= 2, "cuda bench: need at least 2 steps");
  const auto& h = ex.program().h;
  BenchReport r;
  const auto gpus = list_gpus();
  KEEL_CHECK(!gpus.empty(), "cuda bench: no CUDA device");
  r.gpu = gpus[size_t(opt.device)].name;
  r.sms = gpus[size_t(opt.device)].sm_count;
  r.batch = h.batch;
  note(opt, "measuring the read bandwidth");
  r.read_bw_gbs = measure_read_bandwidth(opt.device);
  r.bytes_per_token = ex.weight_bytes_per_step();
  r.floor_ms = double(r.bytes_per_token) / (r.read_bw_gbs * 1e9) * 1e3;
  r.tasks_per_step = ex.program().tasks.size();
  r.ring_stages = ex.ring_stages();
  r.stage_bytes = ex.stage_bytes();
  r.program_hash = program::hash_hex(program::program_hash(ex.program()));
  r.header = h;
  const int total = opt.steps + opt.warmup;
  const int64_t first = first_bench_position(opt);
  KEEL_CHECK(first + total < h.max_context, "cuda bench: ", total, " steps from position ", first,
             " exceed the Program's context ", h.max_context);
  r.first_position = first + opt.warmup;
  r.last_position = first + total - 1;
  if (opt.context - opt.warmup - opt.steps / 2 < 1)
    std::fprintf(stderr, "bench: the steps start at position 1; the median timed step attends over %lld positions\n",
                 (long long)(r.first_position + opt.steps / 2));
  if (opt.prompt_len > 0) {
    KEEL_CHECK(opt.prompt_len < h.max_context, "cuda bench: a prompt of ", opt.prompt_len,
               " tokens does not fit the Program's context ", h.max_context);
    note(opt, cat("prefill: ", h.batch, " prompt(s) of ", opt.prompt_len, " tokens",
                  prefill ? cat(", ", prefill->program().h.seq_lanes, " positions a prefill step") : ", as decode steps"));
    std::vector<Sequence> seqs(size_t(h.batch));
    uint64_t z = 12345;
    for (Sequence& s : seqs) {
      for (int64_t i = 0; i < opt.prompt_len; ++i) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        s.prompt.push_back(int32_t((z >> 33) % uint64_t(h.vocab)));
      }
      s.max_new = 1;
    }
    run_prefilled(ex, prefill, seqs, {});  // warm-up
    r.prefill_ms = run_prefilled(ex, prefill, seqs, {}).first_token_ms;
    r.prompt_len = opt.prompt_len;
    r.prefill_chunk = prefill ? prefill->program().h.seq_lanes : 0;
    if (prefill) {
      r.prefill_hash = program::hash_hex(program::program_hash(prefill->program()));
      r.prefill_variant = prefill->last_kernel_variant();
    }
    if (prefill && !opt.trace_json.empty()) {  // a third, traced run: the prefill launch's first 4 steps
      const std::string path = prefill_trace_path(opt.trace_json);
      note(opt, cat("tracing the prefill launch's first 4 steps into ", path));
      prefill->trace_next_run(path);
      run_prefilled(ex, prefill, seqs, {});
    }
  }
  ex.fill_kv_random();
  for (LaunchMode mode : opt.modes) {
    note(opt, cat("timing ", total, " steps, ", launch_mode_name(mode)));
    // Timed without the trace (its timestamps cost the tasks time); the trace is
    // a separate 8-step launch from the context itself.
    std::vector<double> ms = ex.time_steps(mode, int(first), total, "");
    if (mode == LaunchMode::Megakernel) r.kernel_variant = ex.last_kernel_variant();
    if (mode == LaunchMode::Megakernel && !opt.trace_json.empty()) {
      note(opt, "tracing 8 steps, megakernel");
      ex.time_steps(mode, int(opt.context), std::min(total, 8), opt.trace_json);
    }
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

BenchReport bench_model(const model::Model& m, const BenchOptions& given) {
  BenchOptions opt = given;
  note(opt, "compiling and uploading " + m.dir);
  model::ModelConfig cfg = m.config;
  cfg.dtype = m.weight_dtype;  // plan for the stored weights (a config may declare another dtype)
  const program::Program p = compiler::compile(cfg, bench_compile_options(cfg, opt));
  ProgramExecutorOptions eo;
  eo.device = opt.device;
  ProgramExecutor ex(p, m, eo);
  std::unique_ptr<ProgramExecutor> pre = prefill_executor(cfg, ex, opt, eo);
  return bench_executor(ex, opt, pre.get());
}

BenchReport bench_random(const model::ModelConfig& given_cfg, const BenchOptions& given) {
  BenchOptions opt = given;
  model::ModelConfig cfg = given_cfg;
  cfg.dtype = opt.random_dtype;
  note(opt, cat("compiling and generating random ", dtype_name(cfg.dtype), " weights"));
  ProgramExecutorOptions eo;
  eo.device = opt.device;
  ProgramExecutor ex(cfg, bench_compile_options(cfg, opt), 1, eo);
  std::unique_ptr<ProgramExecutor> pre = prefill_executor(cfg, ex, opt, eo);
  return bench_executor(ex, opt, pre.get());
}

std::string BenchReport::table(const std::string& model_name) const {
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s on %s (%d SMs), batch %d: %.3f GB of weights per step, read bandwidth %.0f GB/s, floor %.3f "
                "ms/step; %zu tasks per step, ring %d x %u KiB; timed positions %lld..%lld; Program %s%s%s\n",
                model_name.c_str(), gpu.c_str(), sms, batch, double(bytes_per_token) / 1e9, read_bw_gbs, floor_ms,
                tasks_per_step, ring_stages, stage_bytes / 1024, (long long)first_position, (long long)last_position,
                program_hash.c_str(), kernel_variant.empty() ? "" : ", kernel ", kernel_variant.c_str());
  s += buf;
  s += "target " + compiler::describe_target(header) + "\n";
  s += "| mode | ms/step (p50) | p10 | p90 | weight GB/s | % of read bw |\n|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "| %s | %.4f | %.4f | %.4f | %.0f | %.1f |\n",
                  std::string(launch_mode_name(r.mode)).c_str(), r.ms_per_token, r.ms_p10, r.ms_p90,
                  r.weight_gbs, r.pct_of_read_bw);
    s += buf;
  }
  if (prompt_len > 0) {
    std::snprintf(buf, sizeof buf, "prefill: %d prompt(s) of %lld tokens, first token after %.2f ms (%s)\n", batch,
                  (long long)prompt_len, prefill_ms,
                  prefill_chunk > 1 ? cat(prefill_chunk, " positions a prefill step, Program ", prefill_hash,
                                          ", kernel ", prefill_variant).c_str()
                                    : "as decode steps");
    s += buf;
  }
  return s;
}

}  // namespace keel::exec::cuda
