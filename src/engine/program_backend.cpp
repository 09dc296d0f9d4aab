// The request <-> run mapping of the Program backends (see program_backend.h).
#include "engine/program_backend.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "program/rules.h"
#include "program/smem_plan.h"

namespace keel::engine {

exec::Sequence sequence_for(const GenerateRequest& req, int64_t max_context, const char* who) {
  program::check_prompt_fits(int64_t(req.prompt.size()), max_context, who);
  KEEL_CHECK(req.max_tokens >= 1, who, ": max_tokens must be >= 1");
  KEEL_CHECK(req.eos_ids.size() <= size_t(program::kMaxEos), who, ": at most ", program::kMaxEos, " eos ids");
  exec::Sequence s;
  s.prompt = req.prompt;
  s.max_new = req.max_tokens;
  s.sampling = req.sampling;
  KEEL_CHECK(req.draws_before >= 0, who, ": draws_before must be >= 0");
  s.draws_before = req.draws_before;
  s.logprobs = req.logprobs;
  return s;
}

exec::Sequence score_sequence(std::span<const int32_t> ids, int64_t max_context, const char* who) {
  program::check_prompt_fits(int64_t(ids.size()), max_context, who);
  exec::Sequence s;
  s.prompt.assign(ids.begin(), ids.end());
  s.max_new = 1;
  return s;
}

GenerateResult result_of(const exec::RunResult& r, bool stopped, size_t seq) {
  GenerateResult g;
  g.output = r.seqs.at(seq).tokens;
  g.logprobs = r.seqs[seq].logprobs;
  g.prefill_ms = r.first_token_ms;
  g.program_batch = r.program_batch;
  g.program_context = r.program_context;
  const size_t n = g.output.size();
  g.decode_ms_per_token = n > 1 ? (r.ms - r.first_token_ms) / double(n - 1) : 0;
  const program::StopReason why = r.seqs[seq].stop;
  g.stop_reason = why != program::StopReason::None ? program::stop_reason_name(why)
                  : stopped                         ? "stopped"
                                                    : "max_tokens";
  return g;
}

std::vector<int> smaller_batches(int batch) {
  std::vector<int> b;
  for (int n = 1; n < batch; n *= 2) b.push_back(n);
  return b;
}

std::vector<program::Program> decode_variants(const model::ModelConfig& cfg, const program::Program& p,
                                              compiler::CompileOptions so, bool small_batches) {
  std::vector<program::Program> out;
  so.kv_sequences = 0;
  so.kv_pages = p.h.n_pages;  // p's cache, shared
  so.prefill_chunk = 0;
  so.decode_lanes = 0;
  std::vector<int> batches = small_batches ? smaller_batches(p.h.batch) : std::vector<int>{};
  batches.push_back(p.h.batch);
  for (int b : batches) {
    so.batch = b;
    so.max_context = p.h.max_context;
    std::optional<program::Program> full;
    if (b != p.h.batch) full = compiler::compile(cfg, so);
    const program::ProgramHeader& fh = full ? full->h : p.h;
    if (p.h.max_context > kShortContext && program::attn_may_stream(fh)) {
      so.max_context = kShortContext;
      program::Program s = compiler::compile(cfg, so);
      if (!program::attn_may_stream(s.h)) out.push_back(std::move(s));
    }
    if (full) out.push_back(std::move(*full));
  }
  return out;
}

int kv_pages_of_tokens(int64_t kv_tokens, int page_size) {
  KEEL_CHECK(kv_tokens >= 0 && kv_tokens / page_size < INT32_MAX, "KV cache of ", kv_tokens, " tokens: out of range");
  return int((kv_tokens + page_size - 1) / page_size);
}

GenerateResult generate_one(const GenerateRequest& req, int64_t max_context, const char* who,
                            const TokenCallback& on_token, const RunFn& run) {
  std::vector<exec::Sequence> seqs = {sequence_for(req, max_context, who)};
  bool stopped = false;
  const exec::RunResult r = run(seqs, run_options_for(req, on_token, &stopped));
  GenerateResult g = result_of(r, stopped);
  g.cached_tokens = seqs[0].kv_filled;
  return g;
}

std::vector<GenerateResult> generate_in_launches(std::span<const GenerateRequest> reqs, int batch, int64_t max_context,
                                                 const char* who, const BatchTokenCallback& on_token, const RunFn& run,
                                                 const Backend* paged) {
  std::vector<GenerateResult> out(reqs.size());
  if (paged)
    for (size_t i = 0; i < reqs.size(); ++i)
      KEEL_CHECK(fit_launch(*paged, reqs.subspan(i, 1), 1) == 1, who, ": request ", i, " (", reqs[i].prompt.size(),
                 " prompt tokens + max_tokens ", reqs[i].max_tokens, ") needs more KV pages than the cache's ",
                 paged->kv_pages_total(), ": raise the KV cache (--kv-tokens) or lower max_tokens");
  bool stopped = false;
  size_t first = 0, n = 0;
  for (; first < reqs.size() && !stopped; first += n) {
    n = paged ? fit_launch(*paged, reqs.subspan(first), size_t(batch)) : std::min(reqs.size() - first, size_t(batch));
    std::vector<exec::Sequence> seqs;
    for (size_t i = first; i < first + n; ++i) {
      KEEL_CHECK(reqs[i].eos_ids == reqs[first].eos_ids, who, ": the requests of one launch must share their EOS ids "
                 "(request ", i, " differs from request ", first, ")");
      seqs.push_back(sequence_for(reqs[i], max_context, who));
    }
    exec::RunOptions ro;
    ro.eos_ids = reqs[first].eos_ids;
    ro.on_token = [&](int seq, int32_t tok, float lp) {
      const GenerateRequest& r = reqs[first + size_t(seq)];
      if (r.logprobs && r.on_logprob) r.on_logprob(lp);
      if (on_token && !on_token(int(first) + seq, tok)) stopped = true;
      return !stopped;
    };
    const exec::RunResult r = run(seqs, ro);
    for (size_t k = 0; k < n; ++k) {
      out[first + k] = result_of(r, stopped, k);
      out[first + k].cached_tokens = seqs[k].kv_filled;
    }
  }
  for (size_t i = first; i < reqs.size(); ++i) out[i].stop_reason = "stopped";  // not started: the callback stopped the batch
  return out;
}

exec::RunOptions run_options_for(const GenerateRequest& req, const TokenCallback& on_token, bool* stopped) {
  exec::RunOptions ro;
  ro.eos_ids = req.eos_ids;
  if (on_token || req.on_logprob)
    ro.on_token = [on_token, stopped, on_lp = req.logprobs ? req.on_logprob : nullptr](int, int32_t tok, float lp) {
      if (on_lp) on_lp(lp);
      if (on_token && !on_token(tok)) *stopped = true;
      return !*stopped;
    };
  return ro;
}

GenerateResult ProgramBackend::generate(const GenerateRequest& req, const TokenCallback& on_token) {
  return generate_one(req, max_context(), who().c_str(), on_token, run_fn());
}

std::vector<GenerateResult> ProgramBackend::generate_batch(std::span<const GenerateRequest> reqs,
                                                           const BatchTokenCallback& on_token) {
  return generate_in_launches(reqs, max_batch(), max_context(), who().c_str(), on_token, run_fn(), this);
}

int64_t ProgramBackend::cached_prefix(std::span<const int32_t> prompt) const {
  return prefix_reuse_ ? pages_->reusable(prompt) : 0;
}

std::vector<float> ProgramBackend::score(std::span<const int32_t> ids) {
  const std::string w = who();
  std::vector<exec::Sequence> seqs = {score_sequence(ids, max_context(), (w + ": score").c_str())};
  exec::RunOptions ro;
  ro.capture_logits = true;
  exec::RunResult r = run(seqs, ro);
  const size_t V = size_t(vocab());
  KEEL_CHECK(r.seqs[0].logits.size() == ids.size() * V, w, ": captured ", r.seqs[0].logits.size() / V,
             " logit rows for ", ids.size(), " tokens");
  return std::move(r.seqs[0].logits);
}

}  // namespace keel::engine

