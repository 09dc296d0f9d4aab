// One launch of a Program backend (cpu, cuda) on KV pages from a KvPagePool
// (kv_pages.h): each sequence leases its pages (sharing the cached prefix of
// its prompt) and is prefilled, and publishes its prompt's whole pages, so the
// next sequence of the launch can share them; then the decode run, and every
// page it filled goes back to the cache.
//
// A long prompt is prefilled on the prefill Program (T lanes of one sequence)
// when nothing else is decoding yet, and on the mixed Program (decode lanes
// beside a prefill group: ProgramHeader::decode_lanes) when sequences before
// it in the launch are ready to decode: they decode while it is prefilled (a
// run that ends when its prefill does, RunOptions::max_steps) and go on from
// where they stopped (exec::continue_sequence), so a joining prompt never
// stalls the others (the serve runner's continuous batching relaunches with
// the running sequences first and the new ones after them).
#pragma once

#include <algorithm>
#include <chrono>
#include <span>
#include <vector>

#include "engine/kv_pages.h"
#include "exec/common/prefill.h"
#include "exec/common/run.h"

namespace keel::engine {

/// Runs `seqs` (each with its prompt, max_new and sampling; at most the decode
/// Program's batch) on `decode` (and `prefill` and `mixed`, which share its
/// cache, or null) with pages from `pool`. `smaller`: other decode Programs on
/// the same weights and cache (fewer sequences, or fewer positions), in the
/// order to try them (engine::decode_variants); the decode run takes the
/// first that holds the launch's sequences and their positions (prompt and
/// max_new), else `decode` (RunResult::program_batch, program_context): a lone
/// sequence does not pay for a wide batch's step, nor a short one for a long
/// context's plan. With `reuse`, a prompt starts after the positions the
/// cache holds (not for runs that capture logits: they need every position's). On return seqs[k].kv_filled = the positions of its
/// prompt that came from the cache. RunResult::ms and first_token_ms include
/// the prefill runs; steps and tasks_run add up every run. Exec:
/// exec::cpu::CpuExecutor or exec::cuda::ProgramExecutor (copy_kv_pages(), and
/// what prefill_sequence needs).
template <class Exec>
exec::RunResult run_paged(Exec& decode, Exec* prefill, Exec* mixed, std::span<Exec* const> smaller, KvPagePool& pool,
                          bool reuse, std::vector<exec::Sequence>& seqs, const exec::RunOptions& opt) {
  const auto& h = decode.program().h;
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n = seqs.size();
  const bool prefills = !opt.capture_logits;  // captured logits come from the decode Program, every position
  std::vector<KvPagePool::Lease> leases;
  std::vector<int32_t> cached(n, 0), ran_from(n, 0);
  std::vector<exec::Sequence> live;  // each sequence as its next run starts it
  leases.reserve(n);
  live.reserve(n);
  exec::RunResult r;
  r.seqs.resize(n);
  bool stopped = false, first = true;
  int32_t idle = -1;
  // One run of the sequences `idx` (their `live` states, in that order) on
  // `ex`: tokens go to the caller under their own index; a false from its
  // callback stops the launch.
  auto run_on = [&](Exec& ex, const std::vector<size_t>& idx, std::vector<exec::Sequence> run_seqs, int max_steps) {
    exec::RunOptions ro = opt;
    ro.max_steps = max_steps;
    const int64_t lanes = program::n_decode_lanes(ex.program().h);
    int64_t decoding = 0;
    for (const exec::Sequence& s : run_seqs) decoding += s.prefill_only ? 0 : 1;
    if (decoding < lanes) {
      if (idle < 0) idle = pool.idle_page();
      ro.idle_page = idle;
    } else {
      ro.idle_page = -1;
    }
    ro.on_token = [&](int i, int32_t tok, float lp) {
      const size_t k = idx[size_t(i)];
      if (first) {
        r.first_token_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        first = false;
      }
      r.seqs[k].tokens.push_back(tok);
      if (seqs[k].logprobs) r.seqs[k].logprobs.push_back(lp);
      if (opt.on_token && !opt.on_token(int(k), tok, lp)) stopped = true;
      return !stopped;
    };
    for (size_t i = 0; i < idx.size(); ++i) ran_from[idx[i]] = run_seqs[i].kv_filled;
    exec::RunResult rr = ex.run(run_seqs, ro);
    for (size_t i = 0; i < idx.size(); ++i) {
      std::vector<float>& l = r.seqs[idx[i]].logits;
      l.insert(l.end(), rr.seqs[i].logits.begin(), rr.seqs[i].logits.end());
    }
    r.steps += rr.steps;
    r.tasks_run += rr.tasks_run;
    return rr;
  };
  std::vector<size_t> ready;  // leased, prefilled, decoding
  try {
    for (size_t k = 0; k < n && !stopped; ++k) {
      exec::Sequence s = seqs[k];
      // Positions the run may write: the prompt and max_new tokens, within the context.
      const int64_t positions = std::min<int64_t>(int64_t(s.prompt.size()) + s.max_new, h.max_context);
      leases.push_back(pool.acquire(s.prompt, positions, reuse && !opt.capture_logits,
                                    [&](int32_t from, int32_t to) { decode.copy_kv_pages({{from, to}}); }));
      s.pages = leases.back().pages;
      s.kv_slot = -1;
      s.kv_filled = int32_t(leases.back().reused);
      s.prefill_only = false;
      cached[k] = ran_from[k] = s.kv_filled;
      const int64_t to_prefill = int64_t(s.prompt.size()) - 1 - s.kv_filled;
      if (prefills && mixed && !ready.empty() && to_prefill >= exec::kMinPrefillPositions) {
        // Prefill beside the ready sequences' decoding, until the prompt is through.
        const int64_t T = mixed->program().h.seq_lanes;
        std::vector<exec::Sequence> run_seqs;
        for (size_t j : ready) run_seqs.push_back(live[j]);
        run_seqs.push_back(s);
        run_seqs.back().prefill_only = true;
        std::vector<size_t> idx = ready;
        idx.push_back(k);
        const exec::RunResult rm = run_on(*mixed, idx, run_seqs, int((to_prefill + T - 1) / T));
        std::vector<size_t> still;
        for (size_t i = 0; i < ready.size(); ++i) {
          const size_t j = ready[i];
          r.seqs[j].stop = rm.seqs[i].stop;
          if (rm.seqs[i].stop != program::StopReason::None || stopped) continue;
          exec::continue_sequence(live[j], rm.seqs[i].tokens, rm.steps);
          still.push_back(j);
        }
        ready = std::move(still);
        if (stopped) {
          // The steps before the last all ran for every prefill lane (the
          // last may have stopped some lanes and not others): keep those
          // positions, so the next launch goes on from there.
          const int64_t kept = s.kv_filled + std::max(0, rm.steps - 1) * T;
          s.kv_filled = int32_t(std::min<int64_t>(kept, int64_t(s.prompt.size()) - 1));
          ran_from[k] = s.kv_filled;  // release() caches them
          live.push_back(s);
          break;
        }
        s.kv_filled = int32_t(s.prompt.size() - 1);
      } else if (prefills && prefill) {
        exec::prefill_sequence(decode, *prefill, s, int(k), opt);
      }
      pool.publish(leases.back(), std::span<const int32_t>(s.prompt).first(size_t(s.kv_filled)));
      ran_from[k] = s.kv_filled;
      live.push_back(s);
      ready.push_back(k);
    }
    if (!stopped && !ready.empty()) {
      std::vector<exec::Sequence> run_seqs;
      for (size_t j : ready) run_seqs.push_back(live[j]);
      int64_t positions = 0;  // the most any sequence of the run may hold
      for (const exec::Sequence& s : run_seqs)
        positions = std::max<int64_t>(positions, std::min<int64_t>(int64_t(s.prompt.size()) + s.max_new, h.max_context));
      Exec* on = &decode;
      for (Exec* e : smaller) {
        const auto& eh = e->program().h;
        if (int64_t(eh.batch) >= int64_t(ready.size()) && int64_t(eh.max_context) >= positions) {
          on = e;
          break;
        }
      }
      r.program_batch = int(on->program().h.batch);
      r.program_context = on->program().h.max_context;
      // A shorter context's page-table rows: the pages past them hold
      // positions beyond every sequence's last (the lease pads to the pool's).
      for (exec::Sequence& s : run_seqs)
        if (!s.pages.empty() && int64_t(s.pages.size()) > int64_t(on->program().h.pages_per_seq))
          s.pages.resize(size_t(on->program().h.pages_per_seq));
      const exec::RunResult rd = run_on(*on, ready, run_seqs, 0);
      for (size_t i = 0; i < ready.size(); ++i) r.seqs[ready[i]].stop = rd.seqs[i].stop;
    }
  } catch (...) {
    for (KvPagePool::Lease& l : leases) pool.abandon(l);
    if (idle >= 0) pool.release_idle(idle);
    throw;
  }
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // What the runs left intact: with a token out, the prompt and output but
  // the last token (never run), and with other sequences beside it the
  // position before too (a finished decode lane keeps appending at its last
  // position while the launch goes on); with none (the launch stopped before
  // the sequence's prompt was through), only the positions before its last
  // run's start (the cache's and the prefill's): how far it got is unknown.
  const size_t drop = n > 1 ? 2 : 1;
  for (size_t k = 0; k < leases.size(); ++k) {
    std::vector<int32_t> t = seqs[k].prompt;
    if (!r.seqs[k].tokens.empty()) {
      t.insert(t.end(), r.seqs[k].tokens.begin(), r.seqs[k].tokens.end());
      t.resize(t.size() > drop ? t.size() - drop : 0);
    } else {
      t.resize(size_t(ran_from[k]));
    }
    pool.release(leases[k], t);
  }
  for (size_t k = 0; k < n; ++k) seqs[k].kv_filled = cached[k];
  if (idle >= 0) pool.release_idle(idle);
  return r;
}

}  // namespace keel::engine
