// `keel compile`: model shapes -> task Program for a Target (no weights
// needed: a checkpoint's safetensors headers give the stored dtype), with an
// optional report (the Program's hash, target, ring and tiles, tasks per
// operator, bytes per worker, critical path, predicted ms/token), JSON or
// Graphviz dumps, and the binary Program file. `--target auto` plans for this
// GPU; `keel bench --json` prints the hash of the Program it runs, which the
// report's hash equals for the same flags.
#include <chrono>
#include <cstdio>

#include "cli_common.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model_source.h"
#include "program/checker.h"
#include "compiler/compiler.h"
#include "compiler/report.h"
#include "program/serialize.h"
#include "model/safetensors.h"
#include "target_flags.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/config.h"

namespace keel::cli {

namespace {

/// The dtype most 2-D tensors of the checkpoint in `dir` are stored in (only
/// the safetensors headers are read); `fallback` when there are none.
DType stored_matrix_dtype(const std::string& dir, DType fallback) {
  if (!file_exists(path_join(dir, "model.safetensors")) && !file_exists(path_join(dir, "model.safetensors.index.json")))
    return fallback;  // a folder with only config.json
  const model::WeightStore w = model::WeightStore::open_dir(dir);
  int votes[3] = {0, 0, 0};
  for (const auto& [name, t] : w.all())
    if (t.shape.size() == 2) ++votes[int(t.dtype)];
  int best = -1;
  for (int d = 0; d < 3; ++d)
    if (votes[d] > 0 && (best < 0 || votes[d] > votes[best])) best = d;
  return best < 0 ? fallback : DType(best);
}

struct CompileArgs {
  std::string model, config, program, out, dump, dtype;
  int workers = 0, batch = 1, prefill_chunk = 0, decode_lanes = 0, kv_sequences = 0, kv_pages = 0;
  TargetFlags target;
  int64_t context = 0;  // 0: the model's max_position_embeddings
  double bandwidth = 3350;
  bool report = false, check = false;
};

int run_compile(const CompileArgs& a) {
  std::string source;
  program::Program p;
  auto t0 = std::chrono::steady_clock::now();
  if (!a.program.empty()) {
    source = a.program;
    p = program::load(a.program);
  } else {
    const bool gguf = a.config.empty() && model::looks_like_gguf(a.model);
    source = !a.config.empty() ? a.config : gguf ? a.model : path_join(a.model, "config.json");
    model::ModelConfig cfg = gguf ? model::Model::load_gguf_config(source, DType::BF16) : model::ModelConfig::load(source);
    // A checkpoint folder: plan for the dtype its weights are stored in (config.json
    // may declare another, e.g. Qwen3-8B says float32 for bf16 weights), as the
    // executors that load them do.
    if (!gguf && a.config.empty()) cfg.dtype = stored_matrix_dtype(a.model, cfg.dtype);
    if (a.dtype == "bf16") cfg.dtype = DType::BF16;
    if (a.dtype == "f16") cfg.dtype = DType::F16;
    if (a.dtype == "f32") cfg.dtype = DType::F32;
    compiler::CompileOptions opt;
    opt.target = resolve_target(a.target);
    apply_compile_flags(a.target, opt);
    opt.workers = a.workers;
    opt.batch = a.batch;
    opt.prefill_chunk = a.prefill_chunk;
    opt.decode_lanes = a.decode_lanes;
    opt.kv_sequences = a.kv_sequences;
    opt.kv_pages = a.kv_pages;
    opt.max_context = int(std::min<int64_t>(a.context > 0 ? a.context : cfg.max_position, cfg.max_position));
    opt.bandwidth_GBps = a.bandwidth;
    p = compiler::compile(cfg, opt);
  }
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // A loaded file may have been edited or corrupted in ways that still pass the
  // loader's bounds checks (e.g. a dropped wait): always prove it safe.
  if (a.check || !a.program.empty()) {
    auto t1 = std::chrono::steady_clock::now();
    program::check_or_throw(p);
    double cms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    std::fprintf(stderr, "checked: every read is covered by a dependency, no write overtakes a read, no deadlock (%.0f ms)\n", cms);
  }
  if (!a.out.empty()) {
    program::save(p, a.out);
    std::fprintf(stderr, "wrote %s\n", a.out.c_str());
  }
  if (a.dump == "json") std::printf("%s\n", compiler::to_json(p).c_str());
  if (a.dump == "dot") std::printf("%s\n", compiler::to_dot(p).c_str());
  if (a.report) {
    std::printf("%s: %s, %u tasks for %d workers, batch %d, context %d; %s in %.1f ms\n", source.c_str(),
                std::string(model::arch_name(model::Arch(p.h.arch))).c_str(), p.h.n_tasks, p.h.n_workers, p.h.batch,
                p.h.max_context, a.program.empty() ? "compiled" : "loaded", ms);
    std::printf("program hash %s (keel compile %s)\n", program::hash_hex(program::program_hash(p)).c_str(),
                compile_flags_of(p.h).c_str());
    std::printf("target %s\n", compiler::describe_target(p.h).c_str());
    std::printf("%s", compiler::report(p, a.bandwidth).c_str());
  }
  if (!a.report && a.dump.empty())
    std::fprintf(stderr, "compiled %u tasks, %u counters for %d workers in %.1f ms\n", p.h.n_tasks, p.h.n_counters,
                 p.h.n_workers, ms);
  return 0;
}
}  // namespace

Command register_compile(CLI::App& root) {
  auto a = std::make_shared<CompileArgs>();
  CLI::App* c = root.add_subcommand("compile", "Compile a model's shapes into a task Program (no weights needed)");
  auto* m = c->add_option("--model", a->model, "Checkpoint folder (config.json and the safetensors headers are read), GGUF file (only its metadata), or ollama:NAME[:TAG]")->transform(model_source());
  auto* f = c->add_option("--config", a->config, "A config.json file")->check(CLI::ExistingFile);
  auto* pr = c->add_option("--program", a->program, "Load a saved Program file instead of compiling (to check, report or dump it)")->check(CLI::ExistingFile);
  m->excludes(f)->excludes(pr);
  f->excludes(pr);
  c->add_option("--workers", a->workers, "Workers to partition for (0: the target's SM count)")->check(CLI::Range(0, 4096))->capture_default_str();
  add_target_flags(*c, a->target, "generic");
  c->add_option("--batch", a->batch, "Sequences decoded per step")->check(CLI::Range(1, 1024))->capture_default_str();
  c->add_option("--prefill-chunk", a->prefill_chunk,
                "Compile the prefill Program of this many lanes (prompt positions a step; no LM head) instead of a "
                "decode Program")
      ->check(CLI::Range(0, 4096));
  c->add_option("--decode-lanes", a->decode_lanes,
                "With --prefill-chunk: a mixed Program, this many decode lanes (LM head, sampling) beside the "
                "prefill lanes, so a prompt is prefilled while other sequences decode (batch = both)")
      ->check(CLI::Range(0, 4096));
  c->add_option("--kv-sequences", a->kv_sequences,
                "Sequences the KV cache holds (0: one per sequence; a prefill Program shares its decode Program's "
                "cache with --kv-sequences = that batch)")
      ->check(CLI::Range(0, 1 << 20));
  c->add_option("--kv-pages", a->kv_pages,
                "KV pages in all, which the engine hands to sequences as they need them (0: --kv-sequences' "
                "worth; at least one sequence's context)")
      ->check(CLI::Range(0, INT32_MAX));
  c->add_option("--context", a->context, "KV-cache capacity per sequence (default: the model's max_position_embeddings; capped at it)")->check(kContextRange);
  c->add_option("--out", a->out, "Write the binary Program to this file");
  c->add_option("--dump", a->dump, "Print the Program as json or dot")->check(CLI::IsMember({"json", "dot"}));
  c->add_flag("--report", a->report, "Print the Program's hash, target, ring and tiles, tasks per operator, bytes per worker, critical path, predicted ms/token");
  c->add_option("--dtype", a->dtype, "Weight dtype to plan for (default: the config's dtype field)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  c->add_flag("--check", a->check, "Run the symbolic Program checker (dependencies, write-after-read, deadlock)");
  c->add_option("--bandwidth", a->bandwidth, "Memory bandwidth in GB/s for the prediction")->check(CLI::Range(0.001, 1e6))->capture_default_str();
  return {c, [a] {
            if (a->model.empty() && a->config.empty() && a->program.empty())
              fail("compile: give --model DIR, --config config.json or --program FILE");
            return run_compile(*a);
          }};
}

}  // namespace keel::cli
