// `keel compile`: model shapes -> task Program (no weights needed), with an
// optional report (tasks per operator, bytes per worker, critical path,
// predicted ms/token), JSON or Graphviz dumps, and the binary Program file.
#include <cstdio>

#include "cli_common.h"
#include "core/error.h"

namespace keel::cli {

namespace {
struct CompileArgs {
  std::string model, config, out, dump;
  int workers = 132, batch = 1;
  int64_t context = 4096;
  double bandwidth = 3350;
  bool report = false;
};

int run_compile(const CompileArgs& a) {
  fail("compile: not yet wired");
}
}  // namespace

Command register_compile(CLI::App& root) {
  auto a = std::make_shared<CompileArgs>();
  CLI::App* c = root.add_subcommand("compile", "Compile a model's shapes into a task Program (no weights needed)");
  auto* m = c->add_option("--model", a->model, "Checkpoint folder (only config.json is read)")->check(CLI::ExistingDirectory);
  auto* f = c->add_option("--config", a->config, "A config.json file")->check(CLI::ExistingFile);
  m->excludes(f);
  c->add_option("--workers", a->workers, "Workers (SMs) to partition for")->check(CLI::Range(1, 4096))->capture_default_str();
  c->add_option("--batch", a->batch, "Sequences decoded per step")->check(CLI::Range(1, 1024))->capture_default_str();
  c->add_option("--context", a->context, "KV-cache capacity per sequence (capped at the model's context)")->check(CLI::PositiveNumber)->capture_default_str();
  c->add_option("--out", a->out, "Write the binary Program to this file");
  c->add_option("--dump", a->dump, "Print the Program as json or dot")->check(CLI::IsMember({"json", "dot"}));
  c->add_flag("--report", a->report, "Print tasks per operator, bytes per worker, critical path, predicted ms/token");
  c->add_option("--bandwidth", a->bandwidth, "Memory bandwidth in GB/s for the prediction")->check(CLI::PositiveNumber)->capture_default_str();
  return {c, [a] {
            if (a->model.empty() && a->config.empty()) fail("compile: give --model DIR or --config config.json");
            return run_compile(*a);
          }};
}

}  // namespace keel::cli
