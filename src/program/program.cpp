// Program helpers: validation of the plain-data arrays, task descriptions for
// messages, and task_accesses — the single definition of what each opcode reads
// and writes, shared by the dependency pass and the checker.
#include "program/program.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/error.h"
#include "program/smem_plan.h"

namespace keel::program {

std::string_view buffer_kind_name(BufferKind k) {
  switch (k) {
    case BufferKind::Weight: return "weight";
    case BufferKind::Activation: return "activation";
    case BufferKind::State: return "state";
    case BufferKind::Kv: return "kv";
    case BufferKind::Constant: return "constant";
  }
  return "?";
}

std::string_view BufferDesc::name_view() const {
  return std::string_view(name, strnlen(name, kNameBytes));
}

int32_t Program::find_buffer(std::string_view name) const {
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].name_view() == name) return int32_t(i);
  return -1;
}

std::string target_name(const ProgramHeader& h) {
  return std::string(h.target.name, strnlen(h.target.name, sizeof(h.target.name)));
}

std::string describe_task(const Program& p, uint32_t task) {
  if (task >= p.tasks.size()) return cat("#", task, " (out of range)");
  const TaskDesc& t = p.tasks[task];
  std::string name = "?";
  if (t.opcode >= 1 && t.opcode <= kNumOpcodes) name = opcode_info(Opcode(t.opcode)).name;
  std::string op;
  if (t.op < p.ops.size()) op = std::string(p.ops[t.op].name, strnlen(p.ops[t.op].name, 32));
  std::ostringstream os;
  os << "#" << task << " " << name;
  if (!op.empty() && op != name) os << "(" << op << ")";
  if (t.layer >= 0) os << " L" << t.layer;
  os << " rows [" << t.row0 << "," << t.row1 << ")";
  if (t.k1 > t.k0) os << " k [" << t.k0 << "," << t.k1 << ")";
  os << " b [" << t.b0 << "," << t.b1 << ")";
  Opcode oc = Opcode(t.opcode);
  if (oc == Opcode::Attention) os << " kvh " << t.arg[0] << " chunk " << t.arg[1];
  if (oc == Opcode::QkvProj) os << " part " << "qkv"[std::clamp(t.arg[0], 0, 2)];
  return os.str();
}

namespace {

// Per-opcode operand checks, so a loaded Program can never make an executor
// index outside a buffer: operand kinds and dtypes, weight shapes against the
// row/k ranges, arguments against the header, and every workspace/KV range
// (task_accesses checks those bounds).
void validate_operands(const Program& p) {
  const ProgramHeader& h = p.h;
  auto want = [&](int32_t id, BufferKind kind, uint64_t count, const char* what) {
    KEEL_CHECK(id >= 0 && size_t(id) < p.buffers.size() && BufferKind(p.buffers[id].kind) == kind,
               "program: ", what, " buffer is missing or of the wrong kind");
    KEEL_CHECK(count == 0 || p.buffers[id].count == count, "program: ", what, " buffer has ",
               p.buffers[id].count, " elements, expected ", count);
  };
  const uint64_t B = uint64_t(h.batch);
  want(h.buf_x, BufferKind::State, B * h.hidden, "x");
  want(h.buf_state, BufferKind::State, B * kSeqStateWords, "state");
  want(h.buf_control, BufferKind::State, kControlWords, "control");
  want(h.buf_tokens, BufferKind::State, B * h.max_context, "tokens");
  want(h.buf_ring, BufferKind::State, B * h.ring_len, "ring");
  want(h.buf_page_table, BufferKind::State, B * h.pages_per_seq, "page_table");
  want(h.buf_logits, BufferKind::State, B * h.vocab, "logits");
  want(h.buf_argmax, BufferKind::State, B * 2 * h.n_lm_tiles, "argmax");
  want(h.buf_embed, BufferKind::Weight, uint64_t(h.vocab) * h.hidden, "embedding");
  want(h.buf_rope, BufferKind::Constant, uint64_t(h.head_dim / 2), "rope");
  KEEL_CHECK(h.head_dim % 2 == 0 && h.ring_len > 0 && h.n_layers > 0 && h.intermediate > 0,
             "program: bad dimensions in the header");
  const uint64_t kv_count = uint64_t(h.n_pages) * h.n_kv_heads * h.page_size * h.head_dim;
  std::vector<Access> acc;
  for (size_t i = 0; i < p.tasks.size(); ++i) {
    const TaskDesc& t = p.tasks[i];
    auto where = [&] { return describe_task(p, uint32_t(i)); };
    auto weight = [&](int slot, int64_t rows, int64_t cols, bool optional) {
      const int32_t id = t.buf[slot];
      if (id < 0) {
        KEEL_CHECK(optional, "program: task ", where(), " lacks weight operand ", slot);
        return;
      }
      const BufferDesc& b = p.buffers[id];
      KEEL_CHECK(BufferKind(b.kind) == BufferKind::Weight && b.rows >= rows && b.cols == cols &&
                     b.count == uint64_t(b.rows) * uint64_t(b.cols),
                 "program: task ", where(), " operand ", slot, " '", b.name_view(), "' has shape [", b.rows,
                 ",", b.cols, "], needs at least [", rows, ",", cols, "]");
    };
    auto kv = [&](int slot) {
      const int32_t id = t.buf[slot];
      KEEL_CHECK(id >= 0 && BufferKind(p.buffers[id].kind) == BufferKind::Kv && p.buffers[id].count == kv_count &&
                     DType(p.buffers[id].dtype) == DType::BF16,
                 "program: task ", where(), " operand ", slot, " is not a KV cache of ", kv_count, " bf16 elements");
    };
    auto qkv = [&](int slot) {  // the raw [q; k; v] activation
      const int32_t id = t.buf[slot];
      KEEL_CHECK(id >= 0 && BufferKind(p.buffers[id].kind) == BufferKind::Activation &&
                     DType(p.buffers[id].dtype) == DType::BF16 && p.buffers[id].count == B * uint64_t(qkv_width(h)),
                 "program: task ", where(), " operand ", slot, " is not a bf16 qkv activation [B, ",
                 qkv_width(h), "]");
    };
    auto is_state = [&](int slot, int32_t id) {
      KEEL_CHECK(t.buf[slot] == id, "program: task ", where(), " operand ", slot, " must be the well-known buffer ", id);
    };
    const int64_t hd = h.head_dim;
    switch (Opcode(t.opcode)) {
      case Opcode::QkvProj: {
        const int part = t.arg[0];
        KEEL_CHECK(part >= 0 && part <= 2, "program: task ", where(), " has bad part ", part);
        const int64_t n = (part == 0 ? h.n_heads : h.n_kv_heads) * hd, off = qkv_part_begin(h, part);
        KEEL_CHECK(t.arg[1] == off && off <= t.row0 && t.row0 < t.row1 && t.row1 <= off + n && t.k0 == 0 &&
                       t.k1 == h.hidden,
                   "program: task ", where(), " has rows outside its part or a bad k range");
        is_state(0, h.buf_x);
        weight(1, 1, h.hidden, false);
        weight(2, n, h.hidden, false);
        weight(3, 1, n, true);
        qkv(4);
        break;
      }
      case Opcode::GateUp:
        is_state(0, h.buf_x);
        weight(1, 1, h.hidden, false);
        weight(2, t.row1, h.hidden, false);
        weight(3, t.row1, h.hidden, false);
        weight(4, 1, h.intermediate, true);
        weight(5, 1, h.intermediate, true);
        KEEL_CHECK(t.row1 <= h.intermediate && t.buf[6] >= 0 && DType(p.buffers[t.buf[6]].dtype) == DType::BF16,
                   "program: task ", where(), " has bad rows or output");
        break;
      case Opcode::Attention:
        KEEL_CHECK(t.arg[0] >= 0 && t.arg[0] < h.n_kv_heads && t.arg[1] >= 0 && t.arg[1] < t.arg[2] &&
                       t.arg[2] == h.n_chunks && t.b1 == t.b0 + 1,
                   "program: task ", where(), " has bad kv head, chunk or sequence");
        KEEL_CHECK(t.arg[3] >= 0 && uint32_t(t.arg[3]) < h.n_counters, "program: task ", where(),
                   " has arrival counter ", t.arg[3], " out of range (", h.n_counters, " counters)");
        qkv(0);
        kv(1);
        kv(2);
        is_state(4, h.buf_state);
        weight(5, 1, hd, true);
        weight(6, 1, hd, true);
        KEEL_CHECK(t.buf[3] >= 0 && DType(p.buffers[t.buf[3]].dtype) == DType::F32 && t.buf[7] >= 0 &&
                       DType(p.buffers[t.buf[7]].dtype) == DType::BF16,
                   "program: task ", where(), " has a bad partial or output operand");
        break;
      case Opcode::MatvecResidual: {
        KEEL_CHECK(t.buf[0] >= 0 && t.buf[1] >= 0 && DType(p.buffers[t.buf[0]].dtype) == DType::BF16,
                   "program: task ", where(), " lacks its input or weight");
        const BufferDesc& a = p.buffers[t.buf[0]];
        weight(1, t.row1, a.cols, false);
        weight(2, 1, h.hidden, true);
        is_state(3, h.buf_x);
        KEEL_CHECK(t.k1 <= a.cols && t.row1 <= h.hidden && p.buffers[t.buf[1]].rows == h.hidden,
                   "program: task ", where(), " has rows or k outside its matrix");
        break;
      }
      case Opcode::LmHead:
        is_state(0, h.buf_x);
        weight(1, 1, h.hidden, false);
        weight(2, t.row1, h.hidden, false);
        is_state(3, h.buf_logits);
        is_state(4, h.buf_argmax);
        KEEL_CHECK(t.row1 <= h.vocab && t.arg[0] >= 0 && t.arg[0] < h.n_lm_tiles, "program: task ", where(),
                   " has rows or tile out of range");
        break;
      case Opcode::Step:
        is_state(0, h.buf_logits);
        is_state(1, h.buf_argmax);
        is_state(2, h.buf_embed);
        is_state(3, h.buf_x);
        is_state(4, h.buf_state);
        is_state(5, h.buf_tokens);
        is_state(6, h.buf_ring);
        is_state(7, h.buf_control);
        KEEL_CHECK(t.arg[0] == h.n_lm_tiles && t.b1 == t.b0 + 1, "program: task ", where(), " has bad tiles or sequence");
        break;
    }
    acc.clear();
    task_accesses(p, t, acc);  // bounds of every workspace and KV range
  }
  // Arrival counters: each belongs to the C chunks of one (operator, sequence,
  // kv head) and to nothing else (no signal, no wait), or "last" would be wrong.
  struct Arrival {
    uint32_t op = UINT32_MAX, n = 0;
    int32_t b = 0, kvh = 0;
  };
  std::unordered_map<uint32_t, Arrival> arrivals;
  for (size_t i = 0; i < p.tasks.size(); ++i) {
    const TaskDesc& t = p.tasks[i];
    if (Opcode(t.opcode) != Opcode::Attention) continue;
    Arrival& a = arrivals[uint32_t(t.arg[3])];
    if (a.n == 0) a = {t.op, 0, t.b0, t.arg[0]};
    KEEL_CHECK(a.op == t.op && a.b == t.b0 && a.kvh == t.arg[0], "program: task ", describe_task(p, uint32_t(i)),
               " shares arrival counter ", t.arg[3], " with another operator, sequence or kv head");
    ++a.n;
  }
  for (const auto& [c, a] : arrivals)
    KEEL_CHECK(a.n == uint32_t(h.n_chunks), "program: arrival counter ", c, " has ", a.n, " chunks, expected ",
               h.n_chunks);
  for (uint32_t c : p.signals)
    KEEL_CHECK(!arrivals.count(c), "program: arrival counter ", c, " is also signalled");
  for (const WaitDesc& w : p.waits)
    KEEL_CHECK(!arrivals.count(w.counter), "program: arrival counter ", w.counter, " is also waited on");
}

}  // namespace

void Program::validate() const {
  const ProgramHeader& hd = h;
  KEEL_CHECK(hd.magic == kProgramMagic, "program: bad magic");
  KEEL_CHECK(hd.version == kProgramVersion, "program: unsupported version ", hd.version);
  KEEL_CHECK(hd.n_tasks == tasks.size() && hd.n_waits == waits.size() &&
                 hd.n_signals == signals.size() && hd.n_buffers == buffers.size() &&
                 hd.n_ops == ops.size() && hd.n_worker_entries == worker_tasks.size() &&
                 hd.constants_bytes == constants.size(),
             "program: header sizes disagree with the arrays");
  KEEL_CHECK(hd.n_workers > 0 && worker_offsets.size() == size_t(hd.n_workers) + 1,
             "program: worker_offsets must have n_workers + 1 = ", hd.n_workers + 1, " entries");
  KEEL_CHECK(hd.batch > 0 && hd.max_context > 0 && hd.page_size > 0 && hd.head_dim > 0 &&
                 hd.n_heads > 0 && hd.n_kv_heads > 0 && hd.n_heads % hd.n_kv_heads == 0 &&
                 hd.hidden > 0 && hd.vocab > 0 && hd.n_chunks > 0 && hd.n_lm_tiles > 0,
             "program: bad model or launch dimensions in the header");
  KEEL_CHECK(int64_t(hd.pages_per_seq) * hd.page_size >= hd.max_context &&
                 int64_t(hd.n_pages) >= int64_t(hd.pages_per_seq) * hd.batch,
             "program: page table cannot hold max_context tokens per sequence");
  KEEL_CHECK(hd.step_counter < hd.n_counters, "program: step counter ", hd.step_counter,
             " out of range (", hd.n_counters, " counters)");
  // Every counter is signalled by some task or is an attention group's arrival
  // counter (one per task at most): more than that is a corrupt count, and the
  // executors and the checker size arrays by it.
  KEEL_CHECK(uint64_t(hd.n_counters) <= uint64_t(hd.n_signals) + hd.n_tasks, "program: ", hd.n_counters,
             " counters, more than its ", hd.n_signals, " signals and ", hd.n_tasks, " tasks could use");
  auto check_buf = [&](int32_t id, const char* what) {
    KEEL_CHECK(id >= 0 && size_t(id) < buffers.size(), "program: well-known buffer ", what,
               " id ", id, " out of range");
  };
  check_buf(hd.buf_x, "x");
  check_buf(hd.buf_state, "state");
  check_buf(hd.buf_control, "control");
  check_buf(hd.buf_tokens, "tokens");
  check_buf(hd.buf_ring, "ring");
  check_buf(hd.buf_page_table, "page_table");
  check_buf(hd.buf_logits, "logits");
  check_buf(hd.buf_argmax, "argmax");
  check_buf(hd.buf_embed, "embed");
  check_buf(hd.buf_rope, "rope");
  for (size_t i = 0; i < buffers.size(); ++i) {
    const BufferDesc& b = buffers[i];
    KEEL_CHECK(b.kind <= uint8_t(BufferKind::Constant) && b.dtype <= uint8_t(DType::BF16),
               "program: buffer ", i, " has a bad kind or dtype");
    KEEL_CHECK(strnlen(b.name, kNameBytes) < size_t(kNameBytes), "program: buffer ", i,
               " name is not terminated");
    uint64_t bytes = b.count * dtype_size(DType(b.dtype));
    uint64_t limit = 0;
    switch (BufferKind(b.kind)) {
      case BufferKind::Activation:
      case BufferKind::State: limit = hd.workspace_bytes; break;
      case BufferKind::Kv: limit = hd.kv_bytes; break;
      case BufferKind::Constant: limit = hd.constants_bytes; break;
      case BufferKind::Weight: limit = UINT64_MAX; break;
    }
    if (BufferKind(b.kind) != BufferKind::Weight)
      KEEL_CHECK(b.offset <= limit && bytes <= limit - b.offset, "program: buffer ", i, " '",
                 b.name_view(), "' lies outside its arena");
  }
  for (size_t i = 0; i < tasks.size(); ++i) {
    const TaskDesc& t = tasks[i];
    KEEL_CHECK(t.opcode >= 1 && t.opcode <= kNumOpcodes, "program: task ", i, " has bad opcode ",
               t.opcode);
    KEEL_CHECK(t.op < ops.size(), "program: task ", i, " has operator ", t.op, " out of range");
    for (int s = 0; s < kMaxOperands; ++s)
      KEEL_CHECK(t.buf[s] >= -1 && t.buf[s] < int32_t(buffers.size()), "program: task ", i,
                 " operand ", s, " = ", t.buf[s], " out of range");
    KEEL_CHECK(uint64_t(t.wait_begin) + t.wait_count <= waits.size(), "program: task ", i,
               " waits out of range");
    KEEL_CHECK(uint64_t(t.signal_begin) + t.signal_count <= signals.size(), "program: task ", i,
               " signals out of range");
    KEEL_CHECK(t.row0 <= t.row1 && t.k0 <= t.k1 && 0 <= t.b0 && t.b0 < t.b1 && t.b1 <= hd.batch,
               "program: task ", i, " has bad row, k or batch ranges");
  }
  for (size_t i = 0; i < waits.size(); ++i)
    KEEL_CHECK(waits[i].counter < hd.n_counters && (waits[i].offset == 0 || waits[i].offset == 1),
               "program: wait ", i, " has counter ", waits[i].counter, " or offset ",
               waits[i].offset, " out of range");
  for (size_t i = 0; i < signals.size(); ++i)
    KEEL_CHECK(signals[i] < hd.n_counters, "program: signal ", i, " counter ", signals[i],
               " out of range");
  for (size_t i = 0; i < ops.size(); ++i)
    KEEL_CHECK(uint64_t(ops[i].task_begin) + ops[i].task_count <= tasks.size(),
               "program: operator ", i, " task range out of range");
  std::vector<uint8_t> seen(tasks.size(), 0);
  KEEL_CHECK(worker_offsets[0] == 0 && worker_offsets.back() == worker_tasks.size(),
             "program: worker_offsets do not cover worker_tasks");
  for (int w = 0; w < hd.n_workers; ++w) {
    KEEL_CHECK(worker_offsets[w] <= worker_offsets[w + 1], "program: worker ", w,
               " has a negative task list");
    int64_t prev = -1;
    for (uint32_t k = worker_offsets[w]; k < worker_offsets[w + 1]; ++k) {
      uint32_t t = worker_tasks[k];
      KEEL_CHECK(t < tasks.size(), "program: worker ", w, " lists task ", t, " out of range");
      KEEL_CHECK(int64_t(t) > prev, "program: worker ", w,
                 " list is not in the global topological order at task ", t);
      KEEL_CHECK(!seen[t], "program: task ", t, " appears on two workers");
      seen[t] = 1;
      prev = t;
    }
  }
  for (size_t i = 0; i < tasks.size(); ++i)
    KEEL_CHECK(seen[i], "program: task ", describe_task(*this, uint32_t(i)), " is on no worker");
  validate_operands(*this);
  check_plan(*this);  // the device plan and every task's rows per ring stage (smem_plan.h)
}

namespace {

// Emits accesses in the workspace (space 0, bytes) or a KV space (units).
struct AccessSink {
  const Program& p;
  std::vector<Access>& out;

  void ws(int32_t buf, uint64_t lo, uint64_t hi, AccessMode m) {
    const BufferDesc& b = p.buffer(buf);
    KEEL_CHECK(BufferKind(b.kind) == BufferKind::Activation || BufferKind(b.kind) == BufferKind::State,
               "program: operand '", b.name_view(), "' is not a workspace buffer");
    KEEL_CHECK(lo <= hi && hi <= b.count, "program: access [", lo, ",", hi, ") outside buffer '",
               b.name_view(), "' of ", b.count, " elements");
    uint64_t es = dtype_size(DType(b.dtype));
    out.push_back({0, b.offset + lo * es, b.offset + hi * es, m, buf});
  }
  // Row-major [B, cols] buffer: elements [c0, c1) of rows b0..b1.
  void rows(int32_t buf, int b0, int b1, uint64_t cols, uint64_t c0, uint64_t c1, AccessMode m) {
    for (int b = b0; b < b1; ++b) ws(buf, b * cols + c0, b * cols + c1, m);
  }
  void kv(int32_t buf, uint64_t lo, uint64_t hi, AccessMode m) {
    const BufferDesc& b = p.buffer(buf);
    KEEL_CHECK(BufferKind(b.kind) == BufferKind::Kv, "program: operand '", b.name_view(),
               "' is not a KV buffer");
    uint64_t units = 2 * uint64_t(p.h.batch) * p.h.n_kv_heads;  // per (b, kv head): history, current position
    KEEL_CHECK(lo <= hi && hi <= units, "program: KV access [", lo, ",", hi, ") outside '",
               b.name_view(), "'");
    out.push_back({1u + uint32_t(buf), lo, hi, m, buf});
  }
};

}  // namespace

void task_accesses(const Program& p, const TaskDesc& t, std::vector<Access>& out) {
  AccessSink s{p, out};
  const ProgramHeader& h = p.h;
  const uint64_t H = h.hidden, hd = h.head_dim, nkv = h.n_kv_heads;
  const uint64_t g = h.n_heads / h.n_kv_heads, C = h.n_chunks;
  const uint64_t S = kSeqStateWords, QKV = uint64_t(qkv_width(h));
  auto need = [&](int slot) {
    KEEL_CHECK(t.buf[slot] >= 0, "program: task with opcode ", t.opcode, " lacks operand ", slot);
    return t.buf[slot];
  };
  using M = AccessMode;
  switch (Opcode(t.opcode)) {
    case Opcode::QkvProj:
      s.rows(need(0), t.b0, t.b1, H, 0, H, M::Read);
      s.rows(need(4), t.b0, t.b1, QKV, t.row0, t.row1, M::Write);
      break;
    case Opcode::GateUp:
      s.rows(need(0), t.b0, t.b1, H, 0, H, M::Read);
      s.rows(need(6), t.b0, t.b1, h.intermediate, t.row0, t.row1, M::Write);
      break;
    case Opcode::Attention: {
      const uint64_t kvh = t.arg[0], c = t.arg[1];
      // The chunk covering pos (attn_chunk_range) appends k and v there: it reads
      // the raw k and v rows and writes the current-position unit; the others read
      // only earlier positions (the history unit, written in earlier steps).
      const bool appends = C <= 1 || c == C - 1;
      s.rows(need(0), t.b0, t.b1, QKV, kvh * g * hd, (kvh + 1) * g * hd, M::Read);
      if (appends) {
        const uint64_t k0 = qkv_part_begin(h, 1) + kvh * hd, v0 = qkv_part_begin(h, 2) + kvh * hd;
        s.rows(need(0), t.b0, t.b1, QKV, k0, k0 + hd, M::Read);
        s.rows(need(0), t.b0, t.b1, QKV, v0, v0 + hd, M::Read);
      }
      s.rows(need(4), t.b0, t.b1, S, 0, S, M::Read);
      s.rows(h.buf_page_table, t.b0, t.b1, h.pages_per_seq, 0, h.pages_per_seq, M::Read);
      for (int b = t.b0; b < t.b1; ++b) {
        const uint64_t u = 2 * (b * nkv + kvh);
        if (C <= 1 || !appends) {
          s.kv(need(1), u, u + 1, M::Read);
          s.kv(need(2), u, u + 1, M::Read);
        }
        if (appends) {
          s.kv(need(1), u + 1, u + 2, M::Write);
          s.kv(need(2), u + 1, u + 2, M::Write);
        }
      }
      // Partials and output: the C chunks of one (sequence, kv head) hand over
      // through their arrival counter (the last merges), so to the dependency
      // pass and the checker they are accumulates of one operator: they run
      // concurrently, and a reader of attn waits for all of them.
      const uint64_t part = g * (hd + 2);
      for (int b = t.b0; b < t.b1; ++b) {
        const uint64_t base = (b * nkv + kvh) * C * part;
        s.ws(need(3), base, base + C * part, M::Accumulate);
      }
      s.rows(need(7), t.b0, t.b1, h.n_heads * hd, kvh * g * hd, (kvh + 1) * g * hd, M::Accumulate);
      break;
    }
    case Opcode::MatvecResidual: {
      const BufferDesc& a = p.buffer(need(0));
      const BufferDesc& x = p.buffer(need(3));
      s.rows(need(0), t.b0, t.b1, a.cols, t.k0, t.k1, M::Read);
      if (t.flags & kFlagAtomicAccumulate) {
        s.rows(need(3), t.b0, t.b1, x.cols, t.row0, t.row1, M::Accumulate);
      } else {
        s.rows(need(3), t.b0, t.b1, x.cols, t.row0, t.row1, M::Read);
        s.rows(need(3), t.b0, t.b1, x.cols, t.row0, t.row1, M::Write);
      }
      break;
    }
    case Opcode::LmHead:
      s.rows(need(0), t.b0, t.b1, H, 0, H, M::Read);
      s.rows(need(3), t.b0, t.b1, h.vocab, t.row0, t.row1, M::Write);
      s.rows(need(4), t.b0, t.b1, 2 * uint64_t(h.n_lm_tiles), 2 * uint64_t(t.arg[0]),
             2 * uint64_t(t.arg[0]) + 2, M::Write);
      break;
    case Opcode::Step: {
      s.rows(need(0), t.b0, t.b1, h.vocab, 0, h.vocab, M::Read);
      s.rows(need(1), t.b0, t.b1, 2 * uint64_t(h.n_lm_tiles), 0, 2 * uint64_t(h.n_lm_tiles), M::Read);
      s.ws(need(7), 0, kControlWords, M::Read);
      s.rows(need(4), t.b0, t.b1, S, 0, S, M::Read);
      s.rows(need(5), t.b0, t.b1, h.max_context, 0, h.max_context, M::Read);
      s.rows(need(4), t.b0, t.b1, S, 0, S, M::Write);
      s.rows(need(5), t.b0, t.b1, h.max_context, 0, h.max_context, M::Write);
      s.rows(need(6), t.b0, t.b1, h.ring_len, 0, h.ring_len, M::Write);
      s.rows(need(3), t.b0, t.b1, H, 0, H, M::Write);
      break;
    }
    default: fail("program: task has unknown opcode ", t.opcode);
  }
}

std::string describe_access(const Program& p, const Access& a) {
  if (a.buffer < 0 || size_t(a.buffer) >= p.buffers.size()) return cat("space ", a.space, " [", a.lo, ",", a.hi, ")");
  const BufferDesc& b = p.buffers[a.buffer];
  uint64_t lo = a.lo, hi = a.hi;
  if (a.space == 0) {
    uint64_t es = dtype_size(DType(b.dtype));
    lo = (a.lo - b.offset) / es;
    hi = (a.hi - b.offset) / es;
  }
  const char* unit = a.space == 0 ? "" : " (sequence*n_kv_heads + kv head)";
  return cat(b.name_view(), "[", lo, ",", hi, ")", unit);
}

}  // namespace keel::program
