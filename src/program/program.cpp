// Program helpers: validation of the plain-data arrays, task descriptions for
// messages, and task_accesses — what each opcode reads and writes, shared by the
// dependency pass and the checker. The per-opcode parts (operand checks,
// footprints) are the units' (src/ops); this file dispatches to them.
#include "program/program.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "ops/ops.h"
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
  if (t.opcode >= 1 && t.opcode <= kNumOpcodes) name = ops::opcode_info(Opcode(t.opcode)).name;
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
  if (oc == Opcode::Attention) {
    const auto o = ops::Attention::Operands::from(t);
    os << " kvh " << o.kv_head << " chunk " << o.chunk;
  }
  if (oc == Opcode::QkvProj) os << " part " << "qkv"[std::clamp(ops::QkvProj::Operands::from(t).part, 0, 2)];
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
  std::vector<Access> acc;
  for (size_t i = 0; i < p.tasks.size(); ++i) {
    const TaskDesc& t = p.tasks[i];
    const ops::OperandCheck ck{p, uint32_t(i)};
    ops::visit(Opcode(t.opcode), [&]<class Op>() { Op::validate(ck, t); });
    acc.clear();
    task_accesses(p, t, acc);  // bounds of every workspace and KV range
  }
  ops::Attention::validate_program(p);
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
                 hd.hidden > 0 && hd.vocab > 0 && hd.n_chunks > 0 && hd.seq_lanes >= 0 &&
                 (lanes_per_seq(hd) == 1 || hd.n_chunks >= 2),
             "program: bad model or launch dimensions in the header");
  // Lanes: decode lanes (a decode Program's batch, a mixed Program's first
  // decode_lanes), then prefill groups of seq_lanes (at least one in a prefill
  // or mixed Program); an LM head exactly when some lane decodes.
  KEEL_CHECK(hd.decode_lanes >= 0 && (lanes_per_seq(hd) > 1 || hd.decode_lanes == 0) &&
                 hd.decode_lanes < hd.batch && (hd.batch - hd.decode_lanes) % lanes_per_seq(hd) == 0 &&
                 (hd.n_lm_tiles > 0) == (n_decode_lanes(hd) > 0),
             "program: bad lanes in the header (batch ", hd.batch, ", seq_lanes ", hd.seq_lanes, ", decode_lanes ",
             hd.decode_lanes, ", LM-head tiles ", hd.n_lm_tiles, ")");
  // At least one sequence's pages: an allocator may hand fewer than one
  // context per sequence (exec::Sequence::pages); a run by KV slots checks
  // that its slots exist (launch_state.cpp).
  KEEL_CHECK(int64_t(hd.pages_per_seq) * hd.page_size >= hd.max_context && hd.n_pages >= hd.pages_per_seq,
             "program: page table cannot hold max_context tokens per sequence");
  KEEL_CHECK(hd.sliding_window >= 0, "program: negative sliding_window ", hd.sliding_window, " in the header");
  // Even chunks put the appending chunk's history beside its append: only
  // decode lanes may (a prefill lane's other chunks read what its
  // sequence's appending chunks write in the same step).
  KEEL_CHECK(hd.attn_min_chunk >= 0 && (hd.attn_min_chunk == 0 || (lanes_per_seq(hd) == 1 && hd.batch > 1)),
             "program: attn_min_chunk ", hd.attn_min_chunk,
             " in the header (only decode Programs of several sequences may have one)");
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

void task_accesses(const Program& p, const TaskDesc& t, std::vector<Access>& out) {
  ops::AccessSink s{p, out, t};
  if (!ops::visit(Opcode(t.opcode), [&]<class Op>() { Op::accesses(s, t); }))
    fail("program: task has unknown opcode ", t.opcode);
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
  if (a.space == 0 && a.nrows > 1) {
    const uint64_t es = dtype_size(DType(b.dtype));
    if (b.cols > 0 && a.pitch == uint64_t(b.cols) * es) {
      const uint64_t cols = uint64_t(b.cols), r0 = lo / cols;
      return cat(b.name_view(), "[rows ", r0, "..", r0 + a.nrows, ", elements ", lo % cols, "..", lo % cols + (hi - lo),
                 ")");
    }
    return cat(b.name_view(), "[", lo, ",", hi, ") and ", a.nrows - 1, " more ranges ", a.pitch, " bytes apart");
  }
  return cat(b.name_view(), "[", lo, ",", hi, ")", unit);
}

}  // namespace keel::program
