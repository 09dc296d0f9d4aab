// The dependency pass. Two decode steps are replayed in program order over the
// address spaces (program/access_map.h; task_accesses gives each task's ranges); each
// segment remembers its last writers (several when they are atomic accumulates
// of one operator, which commute) and the readers since. A read depends on the
// last writers (RAW); a write on the last writers and the readers since (WAW,
// WAR). Producers of the previous step are implied by the step gate and dropped.
// Producers of the same step are grouped by operator; a group is dropped when
// another producer already knows the whole operator is done ("full-operator
// knowledge", propagated along the waits); each remaining group becomes one
// counter, shared by every consumer waiting for exactly that set.
#include <algorithm>
#include <map>
#include <unordered_map>

#include "compiler/passes.h"
#include "program/access_map.h"
#include "core/error.h"
#include "ops/attention.h"

namespace keel::compiler {

using namespace program;  // the passes build a Program

namespace {

struct Seg {
  uint64_t hi = 0;
  std::vector<uint32_t> writers, readers;
  int32_t accum_op = -1;          // writers are accumulates of this operator
  std::vector<uint32_t> before;   // accesses every member of that group must follow
};

struct VecHash {
  size_t operator()(const std::vector<uint32_t>& v) const {
    size_t h = v.size();
    for (uint32_t x : v) h = h * 1000003u ^ x;
    return h;
  }
};

}  // namespace

void build_dependencies(Build& b) {
  Program& p = b.p;
  const uint32_t N = uint32_t(p.tasks.size());
  KEEL_CHECK(N > 0, "compiler: no tasks to build dependencies for");
  std::vector<std::vector<Access>> acc(N);
  for (uint32_t t = 0; t < N; ++t) task_accesses(p, p.tasks[t], acc[t]);

  // 1. Producers of each task in the steady state (step 1), same step only.
  AccessMap<Seg> spaces(p);
  std::vector<std::vector<uint32_t>> same(N);
  std::vector<uint32_t> stamp(2 * size_t(N), UINT32_MAX);
  std::vector<uint32_t> D;
  for (uint32_t step = 0; step < 2; ++step)
    for (uint32_t t = 0; t < N; ++t) {
      const uint32_t inst = step * N + t;
      const int32_t op = p.tasks[t].op;
      D.clear();
      auto add = [&](const std::vector<uint32_t>& v) {
        for (uint32_t x : v)
          if (x != inst && stamp[x] != inst) {
            stamp[x] = inst;
            D.push_back(x);
          }
      };
      for (const Access& a : acc[t]) {
        spaces.cover(a, [&](Seg& s, const Access&) {
          switch (a.mode) {
            case AccessMode::Read:
              add(s.writers);
              if (s.readers.empty() || s.readers.back() != inst) s.readers.push_back(inst);
              break;
            case AccessMode::Write:
              add(s.writers);
              add(s.readers);
              s.writers.assign(1, inst);
              s.readers.clear();
              s.accum_op = -1;
              s.before.clear();
              break;
            case AccessMode::Accumulate:
              if (s.accum_op == op && s.readers.empty()) {
                // Commutes with the group's other adds, but must follow
                // everything the group's first add followed.
                add(s.before);
                s.writers.push_back(inst);
              } else {
                add(s.writers);
                add(s.readers);
                s.before = s.writers;
                s.before.insert(s.before.end(), s.readers.begin(), s.readers.end());
                s.writers.assign(1, inst);
                s.accum_op = op;
              }
              s.readers.clear();
              break;
          }
        });
      }
      if (step == 1)
        for (uint32_t d : D)
          if (d >= N) same[t].push_back(d - N);  // d < N: previous step, implied by the gate
    }

  // 2. Group by operator, prune implied groups, assign counters.
  const size_t words = (p.ops.size() + 63) / 64;
  std::vector<uint64_t> full(size_t(N) * words, 0);
  std::unordered_map<std::vector<uint32_t>, uint32_t, VecHash> counter_of;
  std::vector<std::vector<uint32_t>> counter_members;
  auto counter_for = [&](std::vector<uint32_t>&& key) {
    auto it = counter_of.find(key);
    if (it != counter_of.end()) return it->second;
    uint32_t id = uint32_t(counter_members.size());
    counter_members.push_back(key);
    counter_of.emplace(std::move(key), id);
    return id;
  };
  // The step gate's counter: every Step task.
  {
    const OpDesc& so = p.ops.back();
    KEEL_CHECK(Opcode(so.opcode) == Opcode::Step, "compiler: the last operator must be the step");
    std::vector<uint32_t> key(so.task_count);
    for (uint32_t i = 0; i < so.task_count; ++i) key[i] = so.task_begin + i;
    p.h.step_counter = counter_for(std::move(key));
    p.h.step_expected = so.task_count;
  }
  std::vector<std::vector<WaitDesc>> waits(N);
  // covered[o]: operators every task of which is an ancestor of some task of o,
  // so whoever knows all of o knows all of them too.
  std::vector<uint64_t> covered(p.ops.size() * words, 0);
  std::vector<uint32_t> cnt(p.ops.size(), 0), seen_by(N, UINT32_MAX);
  std::vector<uint64_t> gk;
  auto set_bit = [&](uint64_t* bits, uint32_t op) { bits[op / 64] |= 1ull << (op % 64); };
  auto know_op = [&](uint64_t* bits, uint32_t op) {  // op and everything it covers
    set_bit(bits, op);
    for (size_t w = 0; w < words; ++w) bits[w] |= covered[op * words + w];
  };
  for (uint32_t t = 0; t < N; ++t) {
    std::vector<uint32_t>& prod = same[t];
    std::sort(prod.begin(), prod.end());
    // runs of one operator
    std::vector<std::pair<size_t, size_t>> groups;
    for (size_t i = 0; i < prod.size();) {
      KEEL_CHECK(prod[i] < t, "compiler: task ", describe_task(p, t), " depends on later task ",
                 describe_task(p, prod[i]), " in the same step");
      size_t j = i + 1;
      while (j < prod.size() && p.tasks[prod[j]].op == p.tasks[prod[i]].op) ++j;
      groups.push_back({i, j});
      i = j;
    }
    const size_t G = groups.size();
    gk.assign(G * words, 0);
    uint64_t* mine = &full[size_t(t) * words];
    for (size_t g = 0; g < G; ++g) {
      uint64_t* k = &gk[g * words];
      for (size_t i = groups[g].first; i < groups[g].second; ++i)
        for (size_t w = 0; w < words; ++w) k[w] |= full[size_t(prod[i]) * words + w];
      const uint32_t op = p.tasks[prod[groups[g].first]].op;
      if (groups[g].second - groups[g].first == p.ops[op].task_count) know_op(k, op);
      for (size_t w = 0; w < words; ++w) mine[w] |= k[w];
    }
    for (size_t g = 0; g < G; ++g) {
      const uint32_t op = p.tasks[prod[groups[g].first]].op;
      bool implied = false;
      if (b.opt.prune_transitive)
        for (size_t g2 = 0; g2 < G && !implied; ++g2)
          if (g2 != g && (gk[g2 * words + op / 64] >> (op % 64) & 1)) implied = true;
      if (implied) continue;
      std::vector<uint32_t> key(prod.begin() + groups[g].first, prod.begin() + groups[g].second);
      const uint32_t n = uint32_t(key.size());
      WaitDesc wd;
      wd.counter = counter_for(std::move(key));
      wd.expected = n;
      wd.offset = 1;
      waits[t].push_back(wd);
    }
    // Last task of its operator: work out what the operator covers.
    const uint32_t o = p.tasks[t].op;
    const OpDesc& od = p.ops[o];
    if (t + 1 == od.task_begin + od.task_count) {
      uint64_t* cov = &covered[size_t(o) * words];
      std::vector<uint32_t> touched;
      for (uint32_t x = od.task_begin; x <= t; ++x) {
        for (size_t w = 0; w < words; ++w) cov[w] |= full[size_t(x) * words + w];
        for (uint32_t pr : same[x])
          if (seen_by[pr] != o) {
            seen_by[pr] = o;
            if (cnt[p.tasks[pr].op]++ == 0) touched.push_back(p.tasks[pr].op);
          }
      }
      for (uint32_t q : touched) {
        if (cnt[q] == p.ops[q].task_count) know_op(cov, q);
        cnt[q] = 0;
      }
    }
  }

  // 3. Flatten waits and signals.
  std::vector<std::vector<uint32_t>> sig(N);
  for (uint32_t c = 0; c < counter_members.size(); ++c)
    for (uint32_t t : counter_members[c]) sig[t].push_back(c);
  p.waits.clear();
  p.signals.clear();
  for (uint32_t t = 0; t < N; ++t) {
    TaskDesc& td = p.tasks[t];
    td.wait_begin = uint32_t(p.waits.size());
    td.wait_count = uint32_t(waits[t].size());
    p.waits.insert(p.waits.end(), waits[t].begin(), waits[t].end());
    td.signal_begin = uint32_t(p.signals.size());
    td.signal_count = uint32_t(sig[t].size());
    p.signals.insert(p.signals.end(), sig[t].begin(), sig[t].end());
  }
  p.h.n_counters = uint32_t(counter_members.size());
  // 4. Arrival counters: partition numbered the attention groups in `arrival`.
  for (TaskDesc& td : p.tasks)
    if (Opcode(td.opcode) == Opcode::Attention) {
      ops::AttentionOperands v = ops::AttentionOperands::from(td);
      KEEL_CHECK(v.arrival >= 0 && uint32_t(v.arrival) < b.n_arrival_groups, "compiler: attention task ",
                 describe_task(p, uint32_t(&td - p.tasks.data())), " has no arrival group");
      v.arrival += int32_t(p.h.n_counters);
      v.to(td);
    }
  p.h.n_counters += b.n_arrival_groups;
  p.h.n_waits = uint32_t(p.waits.size());
  p.h.n_signals = uint32_t(p.signals.size());
}

}  // namespace keel::compiler
