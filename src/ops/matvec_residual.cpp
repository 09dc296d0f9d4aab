// MatvecResidual's operand checks and memory footprint (see matvec_residual.h).
#include "ops/matvec_residual.h"

#include "core/error.h"

namespace keel::ops {

void MatvecResidual::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  KEEL_CHECK(o.a >= 0 && o.weight >= 0 && DType(ck.p.buffers[o.a].dtype) == DType::BF16, "program: task ",
             ck.where(), " lacks its input a (bf16) or its weight");
  const program::BufferDesc& a = ck.p.buffers[o.a];
  ck.weight(o.weight, "weight", t.row1, a.cols);
  ck.weight(o.bias, "bias", 1, h.hidden, true);
  ck.is(o.x, h.buf_x, "x");
  ck.that(t.k1 <= a.cols && t.row1 <= h.hidden && ck.p.buffers[o.weight].rows == h.hidden,
          "has rows or k outside its matrix");
}

void MatvecResidual::accesses(AccessSink& s, const TaskDesc& t) {
  using M = AccessMode;
  const Operands o = Operands::from(t);
  const program::BufferDesc& a = s.p.buffer(s.need(o.a, "a"));
  const program::BufferDesc& x = s.p.buffer(s.need(o.x, "x"));
  s.rows(o.a, t.b0, t.b1, a.cols, t.k0, t.k1, M::Read);
  if (t.flags & program::kFlagAtomicAccumulate) {
    s.rows(o.x, t.b0, t.b1, x.cols, t.row0, t.row1, M::Accumulate);
  } else {
    s.rows(o.x, t.b0, t.b1, x.cols, t.row0, t.row1, M::Read);
    s.rows(o.x, t.b0, t.b1, x.cols, t.row0, t.row1, M::Write);
  }
}

}  // namespace keel::ops
