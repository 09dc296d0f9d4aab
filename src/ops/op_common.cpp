// OperandCheck and AccessSink (op_common.h): the checks and the access ranges
// every opcode unit's validate() and accesses() are written with.
#include "ops/op_common.h"

#include "core/error.h"

namespace keel::ops {

using program::BufferDesc;
using program::BufferKind;

std::string OperandCheck::where() const { return program::describe_task(p, task); }

void OperandCheck::weight(int32_t id, const char* field, int64_t rows, int64_t cols, bool optional) const {
  if (id < 0) {
    KEEL_CHECK(optional, "program: task ", where(), " lacks weight operand ", field);
    return;
  }
  const BufferDesc& b = p.buffers[id];
  KEEL_CHECK(BufferKind(b.kind) == BufferKind::Weight && b.rows >= rows && b.cols == cols &&
                 b.count == uint64_t(b.rows) * uint64_t(b.cols),
             "program: task ", where(), " operand ", field, " '", b.name_view(), "' has shape [", b.rows, ",",
             b.cols, "], needs at least [", rows, ",", cols, "]");
}

void OperandCheck::kv(int32_t id, const char* field) const {
  const program::ProgramHeader& h = p.h;
  const uint64_t kv_count = uint64_t(h.n_pages) * h.n_kv_heads * h.page_size * h.head_dim;
  KEEL_CHECK(id >= 0 && BufferKind(p.buffers[id].kind) == BufferKind::Kv && p.buffers[id].count == kv_count &&
                 DType(p.buffers[id].dtype) == DType::BF16,
             "program: task ", where(), " operand ", field, " is not a KV cache of ", kv_count, " bf16 elements");
}

void OperandCheck::qkv(int32_t id, const char* field) const {
  const uint64_t B = uint64_t(p.h.batch);
  KEEL_CHECK(id >= 0 && BufferKind(p.buffers[id].kind) == BufferKind::Activation &&
                 DType(p.buffers[id].dtype) == DType::BF16 && p.buffers[id].count == B * uint64_t(qkv_width(p.h)),
             "program: task ", where(), " operand ", field, " is not a bf16 qkv activation [B, ", qkv_width(p.h),
             "]");
}

void OperandCheck::is(int32_t id, int32_t want, const char* field) const {
  KEEL_CHECK(id == want, "program: task ", where(), " operand ", field, " must be the well-known buffer ", want);
}

void OperandCheck::dtype(int32_t id, DType dt, const char* field) const {
  KEEL_CHECK(id >= 0 && DType(p.buffers[id].dtype) == dt, "program: task ", where(), " operand ", field,
             " is missing or not ", dtype_name(dt));
}

void OperandCheck::normed_input(int32_t x, int32_t norm_w) const {
  if (norm_w >= 0) {
    is(x, p.h.buf_x, "x");
    weight(norm_w, "norm_w", 1, p.h.hidden);
    return;
  }
  const uint64_t B = uint64_t(p.h.batch);
  KEEL_CHECK(x >= 0 && size_t(x) < p.buffers.size() && BufferKind(p.buffers[x].kind) == BufferKind::Activation &&
                 DType(p.buffers[x].dtype) == DType::BF16 && p.buffers[x].count == B * uint64_t(p.h.hidden),
             "program: task ", where(), " operand x is neither the residual stream with a norm weight nor a bf16 "
             "normed activation [B, ", p.h.hidden, "]");
}

void OperandCheck::that(bool ok, const char* what) const {
  KEEL_CHECK(ok, "program: task ", where(), " ", what);
}

int32_t AccessSink::need(int32_t id, const char* field) const {
  KEEL_CHECK(id >= 0, "program: task with opcode ", t.opcode, " lacks operand ", field);
  return id;
}

void AccessSink::ws(int32_t buf, uint64_t lo, uint64_t hi, AccessMode m) {
  const BufferDesc& b = p.buffer(buf);
  KEEL_CHECK(BufferKind(b.kind) == BufferKind::Activation || BufferKind(b.kind) == BufferKind::State,
             "program: operand '", b.name_view(), "' is not a workspace buffer");
  KEEL_CHECK(lo <= hi && hi <= b.count, "program: access [", lo, ",", hi, ") outside buffer '", b.name_view(),
             "' of ", b.count, " elements");
  uint64_t es = dtype_size(DType(b.dtype));
  out.push_back({0, b.offset + lo * es, b.offset + hi * es, m, buf});
}

void AccessSink::rows(int32_t buf, int b0, int b1, uint64_t cols, uint64_t c0, uint64_t c1, AccessMode m) {
  if (b0 >= b1) return;
  KEEL_CHECK(b0 >= 0 && c0 <= c1 && c1 <= cols, "program: access to columns [", c0, ",", c1, ") of rows [", b0, ",",
             b1, ") of ", cols, " columns of '", p.buffer(buf).name_view(), "'");
  ws(buf, uint64_t(b1 - 1) * cols + c0, uint64_t(b1 - 1) * cols + c1, m);  // the last row's bounds check
  program::Access& a = out.back();
  const uint64_t pitch = cols * dtype_size(DType(p.buffer(buf).dtype));
  a.lo -= uint64_t(b1 - 1 - b0) * pitch;
  a.hi -= uint64_t(b1 - 1 - b0) * pitch;
  a.nrows = uint32_t(b1 - b0);
  a.pitch = pitch;
}

void AccessSink::kv(int32_t buf, uint64_t lo, uint64_t hi, AccessMode m) {
  const BufferDesc& b = p.buffer(buf);
  KEEL_CHECK(BufferKind(b.kind) == BufferKind::Kv, "program: operand '", b.name_view(), "' is not a KV buffer");
  uint64_t units = 2 * uint64_t(p.h.batch) * p.h.n_kv_heads;  // per (b, kv head): history, current position
  KEEL_CHECK(lo <= hi && hi <= units, "program: KV access [", lo, ",", hi, ") outside '", b.name_view(), "'");
  out.push_back({1u + uint32_t(buf), lo, hi, m, buf});
}

}  // namespace keel::ops
