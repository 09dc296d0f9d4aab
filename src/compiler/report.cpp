// report / to_json / to_dot and the cost-model simulation behind the predicted
// ms/token. The simulation walks tasks in index order (a valid schedule: every
// wait and every worker predecessor comes earlier) and remembers, for each
// task, which predecessor made it start late, to recover the critical path.
#include "compiler/report.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "compiler/compiler.h"
#include "core/error.h"
#include "ops/ops.h"

namespace keel::compiler {

using namespace program;  // the passes build a Program

namespace {

std::string op_name(const Program& p, uint32_t op) {
  return std::string(p.ops[op].name, strnlen(p.ops[op].name, sizeof(p.ops[op].name)));
}

std::vector<std::vector<uint32_t>> counter_members(const Program& p) {
  std::vector<std::vector<uint32_t>> m(p.h.n_counters);
  for (uint32_t t = 0; t < p.tasks.size(); ++t)
    for (uint32_t i = 0; i < p.tasks[t].signal_count; ++i) m[p.signals[p.tasks[t].signal_begin + i]].push_back(t);
  return m;
}

}  // namespace

Simulation simulate(const Program& p, double bw, double overhead, int context) {
  Simulation s;
  const uint32_t N = uint32_t(p.tasks.size());
  const int W = p.h.n_workers;
  const double per_worker = bw * 1e3 / W;  // bytes per µs
  auto members = counter_members(p);
  std::vector<double> finish(N, 0);
  std::vector<int64_t> why(N, -1);  // predecessor that set the start time
  std::vector<bool> via_wait(N, false);
  std::vector<int> worker_of(N, 0);
  std::vector<int64_t> prev_on_worker(N, -1);
  for (int w = 0; w < W; ++w) {
    int64_t prev = -1;
    for (const uint32_t* t = p.worker_begin(w); t != p.worker_end(w); ++t) {
      worker_of[*t] = w;
      prev_on_worker[*t] = prev;
      prev = *t;
    }
  }
  s.busy_us.assign(size_t(W), 0);
  uint64_t total_bytes = 0;
  for (uint32_t t = 0; t < N; ++t) {
    const TaskDesc& td = p.tasks[t];
    double start = 0;
    if (prev_on_worker[t] >= 0) {
      start = finish[prev_on_worker[t]];
      why[t] = prev_on_worker[t];
    }
    for (uint32_t i = 0; i < td.wait_count; ++i) {
      const WaitDesc& wd = p.waits[td.wait_begin + i];
      if (wd.offset != 1) continue;
      for (uint32_t m : members[wd.counter])
        if (finish[m] > start) {
          start = finish[m];
          why[t] = m;
          via_wait[t] = true;
        }
    }
    if (why[t] >= 0 && why[t] == prev_on_worker[t]) via_wait[t] = false;
    double bytes = double(td.weight_bytes);
    if (Opcode(td.opcode) == Opcode::Attention) {  // the chunk's positions at the context's last one, each sequence's
      int64_t p0 = 0, p1 = 0;
      ops::attention_positions(p.h, td, std::max<int64_t>(int64_t(context) - 1, 0), &p0, &p1);
      bytes += double(p1 - p0) * p.h.head_dim * 2 * 2 * (td.b1 - td.b0);
    } else if (Opcode(td.opcode) == Opcode::PrefillAttention) {  // its lanes' positions, read once
      int64_t p0 = 0, p1 = 0;
      ops::prefill_attention_positions(p.h, td, std::max<int64_t>(int64_t(context) - 1, 0), &p0, &p1);
      bytes += double(p1 - p0) * p.h.head_dim * 2 * 2;
    }
    const double cost = bytes / per_worker + overhead;
    finish[t] = start + cost;
    s.busy_us[worker_of[t]] += cost;
    total_bytes += td.weight_bytes;
  }
  int64_t last = 0;
  for (uint32_t t = 0; t < N; ++t)
    if (finish[t] > finish[last]) last = t;
  s.step_us = N ? finish[last] : 0;
  s.floor_us = double(total_bytes) / (bw * 1e3);
  for (int64_t t = last; t >= 0; t = why[t]) {
    s.critical.push_back(uint32_t(t));
    if (via_wait[t]) ++s.critical_waits;
  }
  std::reverse(s.critical.begin(), s.critical.end());
  return s;
}

std::string report(const Program& p, double bw) {
  std::ostringstream os;
  const ProgramHeader& h = p.h;
  os << std::fixed;
  os << "program: " << h.n_layers << " layers, hidden " << h.hidden << ", heads " << h.n_heads << "/"
     << h.n_kv_heads << " x " << h.head_dim << ", vocab " << h.vocab << "\n";
  os << "launch: " << h.n_workers << " workers, batch " << h.batch;
  if (h.seq_lanes > 1)
    os << " (" << program::n_decode_lanes(h) << " decode lanes, " << (h.batch - program::n_decode_lanes(h))
       << " prefill lanes in groups of " << h.seq_lanes << ")";
  os << ", max context " << h.max_context
     << ", page " << h.page_size << " (" << h.n_pages << " pages), " << h.n_chunks << " KV chunks"
     << (h.attn_min_chunk > 0 ? " (even, at least " + std::to_string(h.attn_min_chunk) + " positions each)" : "") << ", "
     << h.n_lm_tiles << " LM-head tiles\n";
  os << "tasks " << h.n_tasks << ", counters " << h.n_counters << ", waits " << h.n_waits << ", signals "
     << h.n_signals << "; workspace " << std::setprecision(2) << double(h.workspace_bytes) / 1048576.0
     << " MiB, KV " << double(h.kv_bytes) / 1048576.0 << " MiB\n";
  // Per operator kind.
  struct Agg {
    uint64_t tasks = 0, bytes = 0, waits = 0, ring_tasks = 0, stages = 0;
    uint32_t max_waits = 0, min_rows = UINT32_MAX, max_rows = 0;  // rows per ring stage (tiles through the ring)
  };
  std::map<std::string, Agg> per;
  std::vector<std::string> order;
  // Each operator instance's predicted work (TaskDesc::cost_us) per worker: the
  // most any worker has over the mean of all workers. Operators wait for each
  // other, so this, not the whole step's bytes per worker, is what an
  // operator's granularity costs its stage of the critical path.
  std::map<std::string, std::pair<double, int>> spread;  // sum over instances (layers) of max/mean, instances
  std::vector<int32_t> worker_of(p.tasks.size(), 0);
  for (uint32_t w = 0; w < h.n_workers; ++w)
    for (uint32_t i = p.worker_offsets[w]; i < p.worker_offsets[w + 1]; ++i) worker_of[p.worker_tasks[i]] = int32_t(w);
  for (const OpDesc& op : p.ops) {
    std::vector<double> work(size_t(h.n_workers), 0.0);
    double total = 0;
    for (uint32_t t = op.task_begin; t < op.task_begin + op.task_count; ++t) {
      work[size_t(worker_of[t])] += p.tasks[t].cost_us;
      total += p.tasks[t].cost_us;
    }
    if (total <= 0) continue;
    auto& [sum, n] = spread[op.name];
    sum += *std::max_element(work.begin(), work.end()) / (total / double(h.n_workers));
    ++n;
  }
  for (uint32_t t = 0; t < p.tasks.size(); ++t) {
    std::string n = op_name(p, p.tasks[t].op);
    if (!per.count(n)) order.push_back(n);
    Agg& a = per[n];
    a.tasks++;
    a.bytes += p.tasks[t].weight_bytes;
    a.waits += p.tasks[t].wait_count;
    a.max_waits = std::max(a.max_waits, p.tasks[t].wait_count);
    if (const uint32_t r = stage_rows(p.tasks[t])) {
      a.ring_tasks++;
      a.stages += (uint32_t(p.tasks[t].row1 - p.tasks[t].row0) + r - 1) / r;
      a.min_rows = std::min(a.min_rows, r);
      a.max_rows = std::max(a.max_rows, r);
    }
  }
  os << "\n" << std::left << std::setw(16) << "operator" << std::right << std::setw(10) << "tasks"
     << std::setw(14) << "MB/step" << std::setw(12) << "waits/task" << std::setw(10) << "max" << std::setw(16)
     << "rows/stage" << std::setw(14) << "stages/task" << std::setw(12) << "max/mean" << "\n";
  for (const std::string& n : order) {
    const Agg& a = per[n];
    os << std::left << std::setw(16) << n << std::right << std::setw(10) << a.tasks << std::setw(14)
       << std::setprecision(2) << double(a.bytes) / 1e6 << std::setw(12) << double(a.waits) / double(a.tasks)
       << std::setw(10) << a.max_waits;
    // The weight tiles through the ring: rows per stage (min-max) and stages per task, or "-".
    if (a.ring_tasks == 0) {
      os << std::setw(16) << "-" << std::setw(14) << "-";
    } else {
      const std::string rows = a.min_rows == a.max_rows ? std::to_string(a.min_rows)
                                                        : cat(a.min_rows, "-", a.max_rows);
      os << std::setw(16) << (a.ring_tasks < a.tasks ? cat(rows, " (", a.ring_tasks, ")") : rows) << std::setw(14)
         << double(a.stages) / double(a.ring_tasks);
    }
    // The busiest worker's predicted share of the operator over the mean (mean over layers).
    if (const auto it = spread.find(n); it != spread.end()) os << std::setw(12) << it->second.first / it->second.second;
    else os << std::setw(12) << "-";
    os << "\n";
  }
  os << "(max/mean: the busiest worker's share of an operator's predicted work over the mean share, averaged over "
        "layers; 1 is even, one task on W workers is W)\n";
  std::vector<uint64_t> bpw = bytes_per_worker(p);
  uint64_t mn = *std::min_element(bpw.begin(), bpw.end()), mx = *std::max_element(bpw.begin(), bpw.end());
  double mean = 0;
  for (uint64_t v : bpw) mean += double(v);
  mean /= double(bpw.size());
  os << "\nbytes per worker: min " << std::setprecision(3) << double(mn) / 1e6 << " MB, mean " << mean / 1e6
     << " MB, max " << double(mx) / 1e6 << " MB, max/mean " << std::setprecision(4)
     << (mean > 0 ? double(mx) / mean : 0.0) << "\n";
  Simulation s = simulate(p, bw);
  os << "critical path: " << s.critical.size() << " tasks, " << s.critical_waits << " dependency waits\n";
  os << "predicted at " << std::setprecision(0) << bw << " GB/s: " << std::setprecision(3) << s.step_us / 1e3
     << " ms/token (floor " << s.floor_us / 1e3 << " ms = weight bytes / bandwidth, "
     << std::setprecision(1) << (s.step_us > 0 ? 100.0 * s.floor_us / s.step_us : 0.0) << "% of it)\n";
  return os.str();
}

std::string to_json(const Program& p) {
  using nlohmann::json;
  const ProgramHeader& h = p.h;
  json j;
  j["magic"] = "KEEL";
  j["version"] = h.version;
  j["model"] = {{"arch", h.arch}, {"layers", h.n_layers}, {"hidden", h.hidden}, {"intermediate", h.intermediate},
                {"heads", h.n_heads}, {"kv_heads", h.n_kv_heads}, {"head_dim", h.head_dim}, {"vocab", h.vocab},
                {"rms_eps", h.rms_eps}, {"attn_scale", h.attn_scale}, {"qk_norm", h.qk_norm},
                {"qkv_bias", h.qkv_bias}, {"o_bias", h.o_bias}, {"mlp_bias", h.mlp_bias},
                {"tie_embeddings", h.tie_embeddings}};
  j["launch"] = {{"workers", h.n_workers}, {"batch", h.batch}, {"max_context", h.max_context},
                 {"page_size", h.page_size}, {"pages_per_seq", h.pages_per_seq}, {"n_pages", h.n_pages},
                 {"ring_len", h.ring_len}, {"n_chunks", h.n_chunks}, {"attn_min_chunk", h.attn_min_chunk}, {"n_lm_tiles", h.n_lm_tiles},
                 {"seq_lanes", h.seq_lanes}, {"decode_lanes", h.decode_lanes},
                 {"step_counter", h.step_counter}, {"step_expected", h.step_expected},
                 {"counters", h.n_counters}, {"workspace_bytes", h.workspace_bytes},
                 {"kv_bytes", h.kv_bytes}};
  const TargetDesc& tg = h.target;
  j["target"] = {{"name", target_name(h)}, {"sms", tg.sms}, {"smem_per_block", tg.smem_per_block},
                 {"static_smem", tg.static_smem}, {"dynamic_smem", tg.dynamic_smem}, {"stage_bytes", tg.stage_bytes},
                 {"n_stages", tg.n_stages}, {"work_offset", tg.work_offset}, {"work_bytes", tg.work_bytes},
                 {"work_need", tg.work_need}, {"max_stages", tg.max_stages}, {"max_inflight", tg.max_inflight},
                 {"loader_hold", tg.loader_hold}, {"l2_evict_first", tg.l2_evict_first},
                 {"o_split_k", tg.o_split_k}, {"down_split_k", tg.down_split_k},
                 {"mm_engine", tg.mm_engine == kMmEngineWgmma ? "wgmma" : "mma"}, {"row_align", tg.row_align},
                 {"mm_cols", tg.mm_cols}, {"mm_tokens", tg.mm_tokens}};
  j["well_known"] = {{"x", h.buf_x}, {"state", h.buf_state}, {"control", h.buf_control},
                     {"tokens", h.buf_tokens}, {"ring", h.buf_ring}, {"page_table", h.buf_page_table},
                     {"logits", h.buf_logits}, {"argmax", h.buf_argmax}, {"embed", h.buf_embed},
                     {"rope", h.buf_rope}};
  json bufs = json::array();
  for (const BufferDesc& b : p.buffers)
    bufs.push_back({{"name", std::string(b.name_view())}, {"kind", std::string(buffer_kind_name(BufferKind(b.kind)))},
                    {"dtype", std::string(dtype_name(DType(b.dtype)))}, {"layer", b.layer}, {"offset", b.offset},
                    {"count", b.count}, {"rows", b.rows}, {"cols", b.cols}});
  j["buffers"] = bufs;
  json ops = json::array();
  for (uint32_t i = 0; i < p.ops.size(); ++i)
    ops.push_back({{"name", op_name(p, i)}, {"opcode", keel::ops::opcode_info(Opcode(p.ops[i].opcode)).name},
                   {"layer", p.ops[i].layer}, {"task_begin", p.ops[i].task_begin},
                   {"task_count", p.ops[i].task_count}});
  j["ops"] = ops;
  json tasks = json::array();
  for (uint32_t i = 0; i < p.tasks.size(); ++i) {
    const TaskDesc& t = p.tasks[i];
    json w = json::array(), s = json::array();
    for (uint32_t k = 0; k < t.wait_count; ++k) {
      const WaitDesc& wd = p.waits[t.wait_begin + k];
      w.push_back({{"counter", wd.counter}, {"expected", wd.expected}, {"offset", wd.offset}});
    }
    for (uint32_t k = 0; k < t.signal_count; ++k) s.push_back(p.signals[t.signal_begin + k]);
    tasks.push_back({{"id", i}, {"opcode", keel::ops::opcode_info(Opcode(t.opcode)).name}, {"op", t.op}, {"layer", t.layer},
                     {"flags", t.flags}, {"buf", t.buf}, {"rows", {t.row0, t.row1}}, {"k", {t.k0, t.k1}},
                     {"b", {t.b0, t.b1}}, {"arg", t.arg}, {"weight_bytes", t.weight_bytes},
                     {"cost_us", t.cost_us}, {"stage_rows", stage_rows(t)}, {"waits", w}, {"signals", s}});
  }
  j["tasks"] = tasks;
  json workers = json::array();
  for (int w = 0; w < h.n_workers; ++w) workers.push_back(std::vector<uint32_t>(p.worker_begin(w), p.worker_end(w)));
  j["workers"] = workers;
  return j.dump(1);
}

std::string to_dot(const Program& p, bool per_task) {
  auto members = counter_members(p);
  std::ostringstream os;
  os << "digraph keel {\n  rankdir=TB;\n  node [shape=box, fontsize=10];\n";
  if (per_task) {
    for (uint32_t t = 0; t < p.tasks.size(); ++t) os << "  t" << t << " [label=\"" << describe_task(p, t) << "\"];\n";
    for (uint32_t t = 0; t < p.tasks.size(); ++t)
      for (uint32_t k = 0; k < p.tasks[t].wait_count; ++k) {
        const WaitDesc& wd = p.waits[p.tasks[t].wait_begin + k];
        for (uint32_t m : members[wd.counter])
          os << "  t" << m << " -> t" << t << (wd.offset == 0 ? " [style=dashed]" : "") << ";\n";
      }
  } else {
    for (uint32_t o = 0; o < p.ops.size(); ++o)
      os << "  op" << o << " [label=\"" << op_name(p, o) << (p.ops[o].layer >= 0 ? cat(" L", p.ops[o].layer) : "")
         << "\\n" << p.ops[o].task_count << " tasks\"];\n";
    std::map<std::pair<uint32_t, uint32_t>, int> edges;
    for (uint32_t t = 0; t < p.tasks.size(); ++t)
      for (uint32_t k = 0; k < p.tasks[t].wait_count; ++k) {
        const WaitDesc& wd = p.waits[p.tasks[t].wait_begin + k];
        std::vector<uint32_t> seen;
        for (uint32_t m : members[wd.counter]) {
          uint32_t po = p.tasks[m].op;
          if (std::find(seen.begin(), seen.end(), po) == seen.end()) {
            seen.push_back(po);
            edges[{po, p.tasks[t].op}]++;
          }
        }
      }
    for (auto& [e, n] : edges) os << "  op" << e.first << " -> op" << e.second << " [label=\"" << n << "\"];\n";
  }
  os << "}\n";
  return os.str();
}

}  // namespace keel::compiler
