// Shared pieces of the `keel` subcommands: parsing id lists, building a backend
// by name, choosing EOS ids and sampling defaults, and the JSON/number helpers
// the commands print with.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/sampling.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace keel::cli {

/// The range of every --context flag: up to config.json's largest accepted
/// max_position_embeddings. (CLI11's PositiveNumber would print the bounds of a
/// double, 300 digits long, in its error.)
inline const CLI::Range kContextRange(int64_t(1), int64_t(1) << 30);

/// Parses "1,2,3" (spaces allowed), or "@FILE" (the same in a file), into ids;
/// throws keel::Error on bad input.
std::vector<int32_t> parse_ids(const std::string& text, const std::string& flag);

/// Options that select and configure an execution backend.
struct BackendOptions {
  std::string backend = "reference";  // a name of engine::backend_registry()
  int workers = 0;                    // cpu: logical workers (0: default)
  int64_t shuffle_seed = -1;          // cpu: < 0 off
  int64_t context = 0;                // KV capacity (0: model max, capped)
  std::string target = "auto";        // cuda: the target to compile for (auto: the device's)
  int batch = 1;                      // cpu, cuda: sequences per launch (set by the command)
  int prefill_chunk = -1;             // cpu, cuda: prompt positions per prefill step (-1: the backend's default)
  int mixed_prefill = -1;             // cpu, cuda: prefill lanes beside decoding ones (-1: the backend's default)
  bool no_prefix_reuse = false;       // every request computes its whole prompt (engine/kv_pages.h)
  bool fixed_batch = false;           // every launch on the batch's Program (BackendConfig::small_batches off)
  int64_t kv_tokens = 0;              // cpu, cuda: KV cache tokens shared by a launch's sequences (0: context x batch)
};
void add_backend_flags(CLI::App& cmd, BackendOptions& opts);
std::unique_ptr<engine::Backend> make_backend(const model::Model& m, const BackendOptions& opts);
/// Names of the backends compiled into this binary (engine::backend_names()).
std::vector<std::string> available_backends();

/// Sampling flags; unset flags fall back to generation_config.json defaults.
using SamplingFlags = engine::SamplingOverrides;
void add_sampling_flags(CLI::App& cmd, SamplingFlags& f);
using engine::resolve_sampling;

/// EOS ids: generation_config.json, then config.json, then the tokenizer's.
std::vector<int32_t> eos_ids(const model::Model& m, const tokenizer::Tokenizer* tok);

/// Loads the tokenizer from `dir` if it has tokenizer files, or from a GGUF
/// file's metadata when `dir` names a file; null otherwise.
std::unique_ptr<tokenizer::Tokenizer> try_load_tokenizer(const std::string& dir);

/// Checks that every id fits the model's vocabulary. `source` names where the
/// ids came from ("--prompt-ids", or the tokenizer, whose files may belong to
/// another checkpoint); throws keel::Error naming it otherwise.
void check_ids_fit_model(const std::vector<int32_t>& ids, const model::Model& m, const std::string& source);

/// Checks, at load, that the tokenizer found in `dir` can belong to the model:
/// it may not have more tokens than config.json's vocab_size (checkpoints pad
/// the vocabulary, so fewer is fine). Throws keel::Error naming both otherwise.
void check_tokenizer_fits_model(const tokenizer::Tokenizer& tok, const model::Model& m, const std::string& dir);

/// Expands the escapes \n, \t, \r and \\ in a flag value typed on a shell
/// line (`--stop "\n\n"`); other backslashes are kept as they are.
std::string unescape(const std::string& text);

/// Encodes a prompt given as --prompt text or --prompt-ids.
std::vector<int32_t> prompt_ids(const std::string& text, const std::string& ids_text,
                                const tokenizer::Tokenizer* tok);

/// Registers a subcommand's runner; main() dispatches to the parsed one.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command register_generate(CLI::App& root);
Command register_chat(CLI::App& root);
Command register_score(CLI::App& root);
Command register_perplexity(CLI::App& root);
Command register_tokenize(CLI::App& root);
Command register_info(CLI::App& root);
Command register_compile(CLI::App& root);
Command register_bench(CLI::App& root);
Command register_serve(CLI::App& root);

}  // namespace keel::cli
