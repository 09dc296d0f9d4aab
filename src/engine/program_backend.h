// What the backends that run a compiled Program (cpu, cuda) share: mapping an
// engine request onto the executors' run contract (exec/common/run.h) and a
// run's result back. The adapters live in the engine, above the executors, so
// the executors never include the engine (dependencies point down the
// pipeline in DESIGN.md).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "compiler/compiler.h"
#include "engine/backend.h"
#include "engine/kv_pages.h"
#include "exec/common/run.h"
#include "program/smem_plan.h"

namespace keel::engine {

/// The request as one executor sequence; checks the prompt bound
/// (program::check_prompt_fits), max_tokens and the EOS count, naming `who`.
exec::Sequence sequence_for(const GenerateRequest& req, int64_t max_context, const char* who);
/// eos ids and the token callback of a request; *stopped turns true when the
/// callback asks to stop (it must outlive the run).
exec::RunOptions run_options_for(const GenerateRequest& req, const TokenCallback& on_token, bool* stopped);
/// The engine's view of sequence `seq` of a run; `stopped`: the callback asked to stop.
GenerateResult result_of(const exec::RunResult& r, bool stopped, size_t seq = 0);
/// One launch of a list of sequences with these options (the backend's
/// run_paged or exec::run_prefilled). On return each sequence's kv_filled =
/// the positions of its prompt that came from the KV cache (prefix reuse).
using RunFn = std::function<exec::RunResult(std::vector<exec::Sequence>&, const exec::RunOptions&)>;
/// Backend::generate_batch on a Program backend: launches of at most `batch`
/// requests (sequence_for each, naming `who`; the requests of a launch must
/// share their EOS ids) through `run`. With `paged` (its kv_pages_total() >
/// 0), a launch takes only the requests whose pages fit the cache together
/// (fit_launch); a request that fits no launch is an error before any runs.
std::vector<GenerateResult> generate_in_launches(std::span<const GenerateRequest> reqs, int batch, int64_t max_context,
                                                 const char* who, const BatchTokenCallback& on_token, const RunFn& run,
                                                 const Backend* paged = nullptr);
/// Backend::generate on a Program backend: one request through `run`.
GenerateResult generate_one(const GenerateRequest& req, int64_t max_context, const char* who,
                            const TokenCallback& on_token, const RunFn& run);
/// Pages of `page_size` positions for a KV cache of `kv_tokens` tokens (0: 0,
/// the compiler's default of max_context x batch).
int kv_pages_of_tokens(int64_t kv_tokens, int page_size);
/// The smaller decode Programs a backend of `batch` sequences keeps beside its
/// own (BackendConfig::small_batches): 1, 2, 4, ... below `batch`.
std::vector<int> smaller_batches(int batch);
/// Positions of the short-context decode Programs (decode_variants).
using program::kShortContext;
/// The decode Programs a backend keeps beside its own `p`, compiled with `so`
/// (the options p was compiled with, on the target the others plan for), in
/// the order a launch tries them (run_paged: the first that holds its
/// sequences and their positions): for each batch of smaller_batches(p's)
/// (with `small_batches`) and p's own, first a Program of kShortContext
/// positions when one of that batch and p's context reserves attn_stream's
/// staging buffer and one of kShortContext does not (program::attn_may_stream:
/// its ring keeps the third stage, 2.5-4% a step at batch 1 on an H200, so a
/// conversation that stays short does not pay for the full context's plan),
/// then (below p's batch) one of p's context. All share p's KV cache pages.
std::vector<program::Program> decode_variants(const model::ModelConfig& cfg, const program::Program& p,
                                              compiler::CompileOptions so, bool small_batches);
/// score(): the ids as a prompt with one token to generate (its logits are
/// captured at every position); checks the prompt bound, naming `who`.
exec::Sequence score_sequence(std::span<const int32_t> ids, int64_t max_context, const char* who);

/// The Backend of compiled Programs (cpu, cuda): generate, generate_batch,
/// score and the paged KV cache's accounting, over one launch function, run(),
/// that each defines on its executors (run_paged).
class ProgramBackend : public Backend {
 public:
  GenerateResult generate(const GenerateRequest& req, const TokenCallback& on_token) override;
  /// Teacher-forced logits of every position ([ids, vocab]).
  std::vector<float> score(std::span<const int32_t> ids) override;
  /// Launches of up to max_batch() requests whose KV pages fit together (fit_launch).
  std::vector<GenerateResult> generate_batch(std::span<const GenerateRequest> reqs,
                                             const BatchTokenCallback& on_token) override;
  int64_t cached_prefix(std::span<const int32_t> prompt) const override;
  int64_t kv_pages_total() const override { return pages_->n_pages(); }
  int64_t kv_pages_for(int64_t positions) const override {
    return pages_->pages_for(std::min(positions, max_context()));
  }

 protected:
  /// One launch of `seqs` on the backend's executors (RunFn's contract).
  virtual exec::RunResult run(std::vector<exec::Sequence>& seqs, const exec::RunOptions& ro) = 0;
  virtual int64_t vocab() const = 0;
  /// "<name()> backend", for messages.
  std::string who() const { return std::string(name()) + " backend"; }
  RunFn run_fn() {
    return [this](std::vector<exec::Sequence>& s, const exec::RunOptions& ro) { return run(s, ro); };
  }

  std::unique_ptr<KvPagePool> pages_;  // the decode Program's KV pages and the prefix cache in them
  bool prefix_reuse_ = true;           // prompt positions the cache holds are not computed again
};

}  // namespace keel::engine
