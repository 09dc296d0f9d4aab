// GateUp's operand checks and memory footprint (see gate_up.h).
#include "ops/gate_up.h"

namespace keel::ops {

void GateUp::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  ck.normed_input(o.x, o.norm_w);
  ck.weight(o.gate_w, "gate_w", t.row1, h.hidden);
  ck.weight(o.up_w, "up_w", t.row1, h.hidden);
  ck.weight(o.gate_bias, "gate_bias", 1, h.intermediate, true);
  ck.weight(o.up_bias, "up_bias", 1, h.intermediate, true);
  ck.that(t.row1 <= h.intermediate, "has rows outside the intermediate size");
  ck.dtype(o.out, DType::BF16, "out");
}

void GateUp::accesses(AccessSink& s, const TaskDesc& t) {
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  s.rows(s.need(o.x, "x"), t.b0, t.b1, h.hidden, 0, h.hidden, AccessMode::Read);
  s.rows(s.need(o.out, "out"), t.b0, t.b1, h.intermediate, t.row0, t.row1, AccessMode::Write);
}

}  // namespace keel::ops
