// `keel bench`: decode speed on the GPU against the card's measured read
// bandwidth, per launch mode (megakernel, per-op kernels, CUDA graph).
#include <cstdio>

#include "cli_common.h"
#include "core/error.h"

namespace keel::cli {

namespace {
struct BenchArgs {
  std::string model, config, launch = "megakernel", trace;
  bool random_weights = false, json = false;
  int tokens = 256, batch = 1;
  int64_t context = 512;
};

int run_bench(const BenchArgs& a) {
  fail("bench: not yet wired");
}
}  // namespace

Command register_bench(CLI::App& root) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* c = root.add_subcommand("bench", "Measure decode ms/token and % of the GPU's read bandwidth");
  auto* m = c->add_option("--model", a->model, "Checkpoint folder")->check(CLI::ExistingDirectory);
  auto* f = c->add_option("--config", a->config, "A config.json (with --random-weights)")->check(CLI::ExistingFile);
  m->excludes(f);
  c->add_flag("--random-weights", a->random_weights, "Random bf16 weights of the config's shapes, made on the GPU");
  c->add_option("--tokens", a->tokens, "Decode steps to time (median over them, at least 128)")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  c->add_option("--context", a->context, "KV length the timed steps attend over")->check(CLI::PositiveNumber)->capture_default_str();
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
