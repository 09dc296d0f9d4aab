// RmsNorm's operand checks and memory footprint (see rms_norm.h).
#include "ops/rms_norm.h"

namespace keel::ops {

void RmsNorm::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  ck.is(o.x, h.buf_x, "x");
  ck.weight(o.norm_w, "norm_w", 1, h.hidden);
  ck.normed_input(o.out, -1);
  ck.that(0 <= t.b0 && t.b0 < t.b1 && t.b1 <= h.batch, "has sequences out of range");
}

void RmsNorm::accesses(AccessSink& s, const TaskDesc& t) {
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  s.rows(s.need(o.x, "x"), t.b0, t.b1, h.hidden, 0, h.hidden, AccessMode::Read);
  s.rows(s.need(o.out, "out"), t.b0, t.b1, h.hidden, 0, h.hidden, AccessMode::Write);
}

}  // namespace keel::ops
