// What the backends that run a compiled Program (cpu, cuda) share: mapping an
// engine request onto the executors' run contract (exec/common/run.h) and a
// run's result back. The adapters live in the engine, above the executors, so
// the executors never include the engine (dependencies point down the
// pipeline in DESIGN.md).
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/kv_reuse.h"
#include "exec/common/run.h"

namespace keel::engine {

/// The request as one executor sequence; checks the prompt bound
/// (program::check_prompt_fits), max_tokens and the EOS count, naming `who`.
exec::Sequence sequence_for(const GenerateRequest& req, int64_t max_context, const char* who);
/// eos ids and the token callback of a request; *stopped turns true when the
/// callback asks to stop (it must outlive the run).
exec::RunOptions run_options_for(const GenerateRequest& req, const TokenCallback& on_token, bool* stopped);
/// The engine's view of sequence `seq` of a run; `stopped`: the callback asked to stop.
GenerateResult result_of(const exec::RunResult& r, bool stopped, size_t seq = 0);
/// One executor run of a list of sequences with these options.
using RunFn = std::function<exec::RunResult(const std::vector<exec::Sequence>&, const exec::RunOptions&)>;
/// Backend::generate_batch on a Program backend: launches of at most `batch`
/// requests (sequence_for each, naming `who`; the requests of a launch must
/// share their EOS ids) through `run`. With `kv`, each launch places its
/// requests on the KV slots holding the longest prefixes of their prompts and
/// reuses them (reuse_prefixes, record_run).
std::vector<GenerateResult> generate_in_launches(std::span<const GenerateRequest> reqs, int batch, int64_t max_context,
                                                 const char* who, const BatchTokenCallback& on_token, const RunFn& run,
                                                 KvResidency* kv = nullptr);
/// Before a run of `seqs` (sequence k in KV slot k): each sequence's
/// kv_filled = the positions of its prompt slot k holds. Then every slot is
/// forgotten until record_run (a run that fails leaves nothing known).
void reuse_prefixes(KvResidency& kv, std::vector<exec::Sequence>& seqs);
/// After the run: slot k holds sequence k's prompt and output up to the
/// positions the run is known to have left intact: all but the last two
/// tokens when other sequences ran beside it (a finished decode lane keeps
/// appending at its last position while the launch goes on), all but the last
/// one when it ran alone. Slots past seqs.size() hold nothing (the launch's
/// idle lanes append there).
void record_run(KvResidency& kv, const std::vector<exec::Sequence>& seqs, const exec::RunResult& r);
/// generate() on a Program backend: one request in KV slot 0 through `run`,
/// with prefix reuse when `kv` is given.
GenerateResult generate_one(const GenerateRequest& req, int64_t max_context, const char* who,
                            const TokenCallback& on_token, const RunFn& run, KvResidency* kv);
/// score(): the ids as a prompt with one token to generate (its logits are
/// captured at every position); checks the prompt bound, naming `who`.
exec::Sequence score_sequence(std::span<const int32_t> ids, int64_t max_context, const char* who);

}  // namespace keel::engine
