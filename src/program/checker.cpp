// The checker's implementation. Happens-before uses one vector clock per task
// instance: entry w = how many tasks of worker w's stream (all steps, in order)
// are known complete. A wait at step s for counter c with offset o is satisfied
// only after every signaler of c finished step s+o-1, so it joins their clocks
// (memoised per counter and step). The step gate joins the Step tasks' clocks.
#include "program/checker.h"

#include <algorithm>
#include <map>

#include "program/access_map.h"
#include "core/error.h"

namespace keel::program {

namespace {

struct Inst {
  uint32_t task;
  int step;
};

struct Seg {
  uint64_t hi = 0;
  std::vector<Inst> writers, readers;
  int32_t accum_op = -1;    // writers are atomic accumulates of this operator
  std::vector<Inst> before; // what the accumulate group's members must all follow
};

/// Most vector-clock entries (4 bytes each) the checker allocates: 1 GiB.
constexpr uint64_t kMaxClockEntries = uint64_t(1) << 28;

struct Checker {
  const Program& p;
  int S;
  uint32_t N;
  int W;
  std::vector<int> worker_of, pos_of, len;
  std::vector<std::vector<uint32_t>> members;
  std::vector<uint32_t> vc;       // [S*N][W] clocks, task itself excluded
  std::vector<uint32_t> cvc;      // [n_counters*S][W] memoised counter joins
  std::vector<uint8_t> cvc_done;
  CheckResult r;

  uint32_t lin(int step, uint32_t t) const { return uint32_t(step) * len[worker_of[t]] + pos_of[t] + 1; }
  uint32_t* clock(int step, uint32_t t) { return &vc[(size_t(step) * N + t) * W]; }
  bool knows(int step, uint32_t t, const Inst& other) {
    if (other.step == step && other.task == t) return true;
    return clock(step, t)[worker_of[other.task]] >= lin(other.step, other.task);
  }
  void join_done(uint32_t* dst, int step, uint32_t t) {
    const uint32_t* src = clock(step, t);
    for (int w = 0; w < W; ++w) dst[w] = std::max(dst[w], src[w]);
    dst[worker_of[t]] = std::max(dst[worker_of[t]], lin(step, t));
  }
  const uint32_t* counter_clock(uint32_t c, int step) {
    size_t k = size_t(c) * S + step;
    uint32_t* dst = &cvc[k * W];
    if (!cvc_done[k]) {
      for (uint32_t m : members[c]) join_done(dst, step, m);
      cvc_done[k] = 1;
    }
    return dst;
  }
  bool fail(std::string msg) {
    if (r.ok) {
      r.ok = false;
      r.error = std::move(msg);
    }
    return false;
  }
  std::string inst(const Inst& i) { return cat(describe_task(p, i.task), " (step ", i.step, ")"); }

  bool structure() {
    members.assign(p.h.n_counters, {});
    for (uint32_t t = 0; t < N; ++t)
      for (uint32_t i = 0; i < p.tasks[t].signal_count; ++i)
        members[p.signals[p.tasks[t].signal_begin + i]].push_back(t);
    for (uint32_t t = 0; t < N; ++t) {
      const TaskDesc& td = p.tasks[t];
      for (uint32_t i = 0; i < td.wait_count; ++i) {
        const WaitDesc& w = p.waits[td.wait_begin + i];
        const auto& m = members[w.counter];
        if (m.size() != w.expected)
          return fail(cat("checker: ", describe_task(p, t), " waits for ", w.expected, " signals on counter ",
                          w.counter, " but ", m.size(), " tasks signal it"));
        if (w.offset == 1 && !m.empty() && m.back() >= t)
          return fail(cat("checker: ", describe_task(p, t), " waits (same step) on counter ", w.counter,
                          " signalled by ", describe_task(p, m.back()), ", which is not earlier: may deadlock"));
      }
    }
    const auto& sm = members[p.h.step_counter];
    if (sm.size() != p.h.step_expected || sm.empty())
      return fail(cat("checker: step counter ", p.h.step_counter, " has ", sm.size(), " signalers, header says ",
                      p.h.step_expected));
    for (uint32_t t : sm)
      if (Opcode(p.tasks[t].opcode) != Opcode::Step)
        return fail(cat("checker: step counter is signalled by non-step task ", describe_task(p, t)));
    uint32_t n_step = 0;
    for (const TaskDesc& td : p.tasks) n_step += Opcode(td.opcode) == Opcode::Step;
    if (n_step != sm.size()) return fail("checker: not every Step task signals the step counter");
    return true;
  }

  bool clocks() {
    worker_of.assign(N, 0);
    pos_of.assign(N, 0);
    len.assign(W, 0);
    for (int w = 0; w < W; ++w) {
      int k = 0;
      for (const uint32_t* t = p.worker_begin(w); t != p.worker_end(w); ++t, ++k) {
        worker_of[*t] = w;
        pos_of[*t] = k;
      }
      len[w] = k;
    }
    vc.assign(size_t(S) * N * W, 0);
    cvc.assign(size_t(p.h.n_counters) * S * W, 0);
    cvc_done.assign(size_t(p.h.n_counters) * S, 0);
    std::vector<uint32_t> gate(W, 0), prev_task(W, UINT32_MAX);
    for (int s = 0; s < S; ++s) {
      if (s > 0) {
        std::fill(gate.begin(), gate.end(), 0);
        for (uint32_t m : members[p.h.step_counter]) join_done(gate.data(), s - 1, m);
        // Every task of step s-1 must happen before the gate.
        for (int w = 0; w < W; ++w)
          if (len[w] && gate[w] < uint32_t(s) * len[w]) {
            uint32_t t = p.worker_begin(w)[std::min<uint32_t>(gate[w] - uint32_t(s - 1) * len[w], len[w] - 1)];
            return fail(cat("checker: ", describe_task(p, t), " (step ", s - 1,
                            ") is not an ancestor of the step's Step tasks, so the step gate does not "
                            "order it and counters could be overtaken"));
          }
      }
      std::fill(prev_task.begin(), prev_task.end(), UINT32_MAX);
      for (uint32_t t = 0; t < N; ++t) {
        uint32_t* c = clock(s, t);
        const int w = worker_of[t];
        for (int v = 0; v < W; ++v) c[v] = gate[v];
        if (prev_task[w] != UINT32_MAX) join_done(c, s, prev_task[w]);
        else if (s > 0 && len[w]) c[w] = std::max(c[w], uint32_t(s) * len[w]);  // own earlier steps
        const TaskDesc& td = p.tasks[t];
        for (uint32_t i = 0; i < td.wait_count; ++i) {
          const WaitDesc& wd = p.waits[td.wait_begin + i];
          int k = s + wd.offset - 1;
          if (k < 0) continue;
          const uint32_t* cc = counter_clock(wd.counter, k);
          for (int v = 0; v < W; ++v) c[v] = std::max(c[v], cc[v]);
        }
        prev_task[w] = t;
      }
    }
    return true;
  }

  bool races() {
    AccessMap<Seg> spaces(p);
    std::vector<Access> acc;
    for (int s = 0; s < S; ++s)
      for (uint32_t t = 0; t < N; ++t) {
        acc.clear();
        task_accesses(p, p.tasks[t], acc);
        const Inst me{t, s};
        const int32_t op = p.tasks[t].op;
        for (const Access& a : acc) {
          ++r.accesses;
          bool ok = true;
          spaces.cover(a, [&](Seg& seg, const Access& here) {
            if (!ok) return;
            auto unordered = [&](const Inst& o, const char* kind) {
              ok = fail(cat("checker: ", inst(me), (a.mode == AccessMode::Read ? " reads " : " writes "),
                            describe_access(p, here), " ", kind, " ", inst(o), " without waiting for it"));
            };
            if (a.mode == AccessMode::Read) {
              if (seg.writers.empty() && a.space == 0 &&
                  BufferKind(p.buffers[a.buffer].kind) == BufferKind::Activation) {
                ok = fail(cat("checker: ", inst(me), " reads ", describe_access(p, here),
                              ", which no task wrote before"));
                return;
              }
              for (const Inst& w : seg.writers)
                if (!knows(s, t, w)) return unordered(w, "written by");
              seg.readers.push_back(me);
              return;
            }
            const bool same_accum = a.mode == AccessMode::Accumulate && seg.accum_op == op && seg.readers.empty();
            if (same_accum) {  // commutes with the group, but follows what the group follows
              for (const Inst& o : seg.before)
                if (!knows(s, t, o)) return unordered(o, "accumulated after an access by");
              seg.writers.push_back(me);
              return;
            }
            for (const Inst& w : seg.writers)
              if (!knows(s, t, w)) return unordered(w, "also written by");
            for (const Inst& rd : seg.readers)
              if (!knows(s, t, rd)) return unordered(rd, "still read by");
            if (a.mode == AccessMode::Accumulate) {
              seg.before = seg.writers;
              seg.before.insert(seg.before.end(), seg.readers.begin(), seg.readers.end());
              seg.accum_op = op;
            } else {
              seg.before.clear();
              seg.accum_op = -1;
            }
            seg.writers.assign(1, me);
            seg.readers.clear();
          });
          if (!ok) return false;
        }
      }
    return true;
  }
};

}  // namespace

CheckResult check(const Program& p, int steps) {
  KEEL_CHECK(steps >= 2, "checker: needs at least 2 steps, got ", steps);
  p.validate();
  // The vector clocks take (tasks + counters) x steps x workers entries.
  const uint64_t entries = (uint64_t(p.h.n_tasks) + p.h.n_counters) * uint64_t(steps) * uint64_t(p.h.n_workers);
  KEEL_CHECK(entries <= kMaxClockEntries, "checker: the Program is too large to check (", p.h.n_tasks, " tasks and ",
             p.h.n_counters, " counters on ", p.h.n_workers, " workers need ", entries, " clock entries, limit ",
             kMaxClockEntries, ")");
  Checker c{p, steps, uint32_t(p.tasks.size()), p.h.n_workers, {}, {}, {}, {}, {}, {}, {}, {}};
  if (c.structure() && c.clocks()) c.races();
  return c.r;
}

void check_or_throw(const Program& p, int steps) {
  CheckResult r = check(p, steps);
  KEEL_CHECK(r.ok, r.error);
}

}  // namespace keel::program
