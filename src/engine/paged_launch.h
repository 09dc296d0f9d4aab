// One launch of a Program backend (cpu, cuda) on KV pages from a KvPagePool
// (kv_pages.h): each sequence leases its pages (sharing the cached prefix of
// its prompt), is prefilled (exec::prefill_sequence) and publishes its
// prompt's whole pages, so the next sequence of the launch can share them;
// then the decode run, and every page it filled goes back to the cache.
#pragma once

#include <chrono>
#include <vector>

#include "engine/kv_pages.h"
#include "exec/common/prefill.h"
#include "exec/common/run.h"

namespace keel::engine {

/// Runs `seqs` (each with its prompt, max_new and sampling; at most the decode
/// Program's batch) on `decode` (and `prefill`, which shares its cache, or
/// null) with pages from `pool`. With `reuse`, a prompt starts after the
/// positions the cache holds (not for runs that capture logits: they need
/// every position's). On return seqs[k].kv_filled = the positions of its
/// prompt that came from the cache. RunResult::ms and first_token_ms include
/// the prefill runs. Exec: exec::cpu::CpuExecutor or
/// exec::cuda::ProgramExecutor (copy_kv_pages(), and what prefill_sequence
/// needs).
template <class Exec>
exec::RunResult run_paged(Exec& decode, Exec* prefill, KvPagePool& pool, bool reuse, std::vector<exec::Sequence>& seqs,
                          const exec::RunOptions& opt) {
  const auto& h = decode.program().h;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<KvPagePool::Lease> leases;
  std::vector<int32_t> cached(seqs.size(), 0), ran_from(seqs.size(), 0);
  leases.reserve(seqs.size());
  exec::RunOptions ro = opt;
  ro.idle_page = -1;
  exec::RunResult r;
  try {
    for (size_t k = 0; k < seqs.size(); ++k) {
      exec::Sequence& s = seqs[k];
      // Positions the run may write: the prompt and max_new tokens, within the context.
      const int64_t positions = std::min<int64_t>(int64_t(s.prompt.size()) + s.max_new, h.max_context);
      leases.push_back(pool.acquire(s.prompt, positions, reuse && !opt.capture_logits,
                                    [&](int32_t from, int32_t to) { decode.copy_kv_pages({{from, to}}); }));
      s.pages = leases.back().pages;
      s.kv_slot = -1;
      s.kv_filled = int32_t(leases.back().reused);
      cached[k] = s.kv_filled;
      if (prefill && !opt.capture_logits) exec::prefill_sequence(decode, *prefill, s, int(k), opt);
      pool.publish(leases.back(), std::span<const int32_t>(s.prompt).first(size_t(s.kv_filled)));
      ran_from[k] = s.kv_filled;
    }
    if (int64_t(seqs.size()) < h.batch) ro.idle_page = pool.idle_page();
    const double pre_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    r = decode.run(seqs, ro);
    r.ms += pre_ms;
    r.first_token_ms += pre_ms;
  } catch (...) {
    for (KvPagePool::Lease& l : leases) pool.abandon(l);
    if (ro.idle_page >= 0) pool.release_idle(ro.idle_page);
    throw;
  }
  // What the run left intact: with a token out, the prompt and output but
  // the last token (never run), and with other sequences beside it the
  // position before too (a finished decode lane keeps appending at its last
  // position while the launch goes on); with none (the launch stopped before
  // the sequence's prompt was through), only the positions before the decode
  // run's start (the cache's and the prefill's): how far it got is unknown.
  const size_t drop = seqs.size() > 1 ? 2 : 1;
  for (size_t k = 0; k < seqs.size(); ++k) {
    std::vector<int32_t> t = seqs[k].prompt;
    if (k < r.seqs.size() && !r.seqs[k].tokens.empty()) {
      t.insert(t.end(), r.seqs[k].tokens.begin(), r.seqs[k].tokens.end());
      t.resize(t.size() > drop ? t.size() - drop : 0);
    } else {
      t.resize(size_t(ran_from[k]));
    }
    pool.release(leases[k], t);
    seqs[k].kv_filled = cached[k];
  }
  if (ro.idle_page >= 0) pool.release_idle(ro.idle_page);
  return r;
}

}  // namespace keel::engine
