// The placement pass: per-worker ordered lists. Task indices are the global
// topological order (operators in graph order, tasks of an operator together),
// so each worker runs its tasks by increasing index. Deadlock freedom
// (invariant 4) then needs only that every same-step wait names counters whose
// signalers all come earlier; this pass checks it, so a Program that would hang
// never leaves the compiler.
#include <algorithm>

#include "compiler/passes.h"
#include "core/error.h"

namespace keel::compiler {

using namespace program;  // the passes build a Program

void place(Build& b) {
  Program& p = b.p;
  const uint32_t N = uint32_t(p.tasks.size());
  const int W = b.opt.workers;
  KEEL_CHECK(b.task_worker.size() == N, "compiler: placement needs a worker for every task");
  // Last signaler of each counter.
  std::vector<int64_t> last_signaler(p.h.n_counters, -1);
  for (uint32_t t = 0; t < N; ++t)
    for (uint32_t i = 0; i < p.tasks[t].signal_count; ++i) {
      uint32_t c = p.signals[p.tasks[t].signal_begin + i];
      last_signaler[c] = std::max<int64_t>(last_signaler[c], t);
    }
  for (uint32_t t = 0; t < N; ++t) {
    const TaskDesc& td = p.tasks[t];
    for (uint32_t i = 0; i < td.wait_count; ++i) {
      const WaitDesc& w = p.waits[td.wait_begin + i];
      KEEL_CHECK(last_signaler[w.counter] >= 0, "compiler: task ", describe_task(p, t),
                 " waits on counter ", w.counter, " that nothing signals");
      if (w.offset == 1)
        KEEL_CHECK(last_signaler[w.counter] < int64_t(t), "compiler: task ", describe_task(p, t),
                   " waits on counter ", w.counter, " signalled by later task ",
                   describe_task(p, uint32_t(last_signaler[w.counter])), " (would deadlock)");
    }
  }
  std::vector<std::vector<uint32_t>> lists(static_cast<size_t>(W));
  for (uint32_t t = 0; t < N; ++t) {
    const int w = b.task_worker[t];
    KEEL_CHECK(w >= 0 && w < W, "compiler: task ", t, " placed on worker ", w, " of ", W);
    lists[size_t(w)].push_back(t);
  }
  p.worker_offsets.assign(size_t(W) + 1, 0);
  p.worker_tasks.clear();
  p.worker_tasks.reserve(N);
  for (int w = 0; w < W; ++w) {
    p.worker_offsets[size_t(w)] = uint32_t(p.worker_tasks.size());
    p.worker_tasks.insert(p.worker_tasks.end(), lists[size_t(w)].begin(), lists[size_t(w)].end());
  }
  p.worker_offsets[size_t(W)] = uint32_t(p.worker_tasks.size());
  p.h.n_worker_entries = uint32_t(p.worker_tasks.size());
  if (b.opt.prune_transitive) prune_worker_order(b);
}

// Drops the same-step waits that the worker order and the other waits already
// imply (for example a producer placed earlier on the consumer's own worker).
// Vector clocks over one step: entry w = tasks of worker w known complete.
void prune_worker_order(Build& b) {
  Program& p = b.p;
  const uint32_t N = uint32_t(p.tasks.size());
  const int W = p.h.n_workers;
  std::vector<int> worker_of(N), pos_of(N);
  for (int w = 0; w < W; ++w) {
    int k = 0;
    for (const uint32_t* t = p.worker_begin(w); t != p.worker_end(w); ++t, ++k) {
      worker_of[*t] = w;
      pos_of[*t] = k + 1;  // clock value once done
    }
  }
  std::vector<std::vector<uint32_t>> members(p.h.n_counters);
  for (uint32_t t = 0; t < N; ++t)
    for (uint32_t i = 0; i < p.tasks[t].signal_count; ++i) members[p.signals[p.tasks[t].signal_begin + i]].push_back(t);
  std::vector<uint32_t> done(size_t(N) * W, 0);  // clock of each task once finished
  std::vector<uint32_t> cclock(size_t(p.h.n_counters) * W, 0);
  std::vector<uint8_t> cready(p.h.n_counters, 0);
  auto counter_clock = [&](uint32_t c) {
    uint32_t* d = &cclock[size_t(c) * W];
    if (!cready[c]) {
      for (uint32_t m : members[c])
        for (int w = 0; w < W; ++w) d[w] = std::max(d[w], done[size_t(m) * W + w]);
      cready[c] = 1;
    }
    return d;
  };
  std::vector<uint32_t> prev(W, UINT32_MAX), base(W), with(W);
  std::vector<WaitDesc> kept_all;
  std::vector<uint32_t> begin(N), count(N);
  for (uint32_t t = 0; t < N; ++t) {
    TaskDesc& td = p.tasks[t];
    const int w = worker_of[t];
    std::fill(base.begin(), base.end(), 0);
    if (prev[w] != UINT32_MAX)
      for (int v = 0; v < W; ++v) base[v] = done[size_t(prev[w]) * W + v];
    std::vector<WaitDesc> ws(p.waits.begin() + td.wait_begin, p.waits.begin() + td.wait_begin + td.wait_count);
    std::vector<bool> keep(ws.size(), true);
    for (size_t i = 0; i < ws.size(); ++i) {
      if (ws[i].offset != 1) continue;
      with = base;
      for (size_t j = 0; j < ws.size(); ++j)
        if (j != i && keep[j] && ws[j].offset == 1) {
          const uint32_t* cc = counter_clock(ws[j].counter);
          for (int v = 0; v < W; ++v) with[v] = std::max(with[v], cc[v]);
        }
      bool implied = true;
      for (uint32_t m : members[ws[i].counter])
        if (with[worker_of[m]] < uint32_t(pos_of[m])) {
          implied = false;
          break;
        }
      if (implied) keep[i] = false;
    }
    uint32_t* mine = &done[size_t(t) * W];
    for (int v = 0; v < W; ++v) mine[v] = base[v];
    begin[t] = uint32_t(kept_all.size());
    for (size_t i = 0; i < ws.size(); ++i) {
      if (!keep[i]) continue;
      kept_all.push_back(ws[i]);
      if (ws[i].offset == 1) {
        const uint32_t* cc = counter_clock(ws[i].counter);
        for (int v = 0; v < W; ++v) mine[v] = std::max(mine[v], cc[v]);
      }
    }
    count[t] = uint32_t(kept_all.size()) - begin[t];
    mine[w] = std::max<uint32_t>(mine[w], uint32_t(pos_of[t]));
    prev[w] = t;
  }
  for (uint32_t t = 0; t < N; ++t) {
    p.tasks[t].wait_begin = begin[t];
    p.tasks[t].wait_count = count[t];
  }
  p.waits = std::move(kept_all);
  p.h.n_waits = uint32_t(p.waits.size());
  // Counters nobody waits on any more (other than the step counter) keep their
  // signals: harmless, and the ids stay stable.
}

}  // namespace keel::compiler
