// keel: compile a Hugging Face LLM checkpoint into a persistent GPU megakernel
// and run it. This file only wires the subcommands together; each lives in its
// own cmd_*.cpp. Errors from any stage (keel::Error) are printed as one line and
// exit with status 1; bad flags exit with CLI11's usage error status.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "cli_common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"keel: one persistent GPU megakernel per LLM checkpoint (Llama, Mistral, Qwen2, Qwen3)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "keel 0.1.0");
  std::vector<keel::cli::Command> cmds = {
      keel::cli::register_generate(app),   keel::cli::register_chat(app),
      keel::cli::register_score(app),      keel::cli::register_perplexity(app),
      keel::cli::register_tokenize(app),   keel::cli::register_info(app),
      keel::cli::register_compile(app),    keel::cli::register_bench(app),
      keel::cli::register_serve(app),
  };
  // CLI11 reports an unknown first word only as "A subcommand is required":
  // name it, and list the commands there are.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const auto& c : cmds) {
      found = found || c.app->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + c.app->get_name();
    }
    if (!found) {
      std::fprintf(stderr, "keel: unknown command '%s' (commands: %s; see keel --help)\n", argv[1], known.c_str());
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& c : cmds)
      if (c.app->parsed()) return c.run();
  } catch (const keel::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "keel: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "keel: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
