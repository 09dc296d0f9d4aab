// LmHead's operand checks and memory footprint (see lm_head.h).
#include "ops/lm_head.h"

namespace keel::ops {

void LmHead::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  ck.normed_input(o.x, o.norm_w);
  ck.weight(o.weight, "weight", t.row1, h.hidden);
  ck.is(o.logits, h.buf_logits, "logits");
  ck.is(o.argmax, h.buf_argmax, "argmax");
  ck.that(t.row1 <= h.vocab && o.tile >= 0 && o.tile < h.n_lm_tiles, "has rows or tile out of range");
}

void LmHead::accesses(AccessSink& s, const TaskDesc& t) {
  using M = AccessMode;
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  const uint64_t T2 = 2 * uint64_t(h.n_lm_tiles), tile = uint64_t(o.tile);
  s.rows(s.need(o.x, "x"), t.b0, t.b1, h.hidden, 0, h.hidden, M::Read);
  s.rows(s.need(o.logits, "logits"), t.b0, t.b1, h.vocab, t.row0, t.row1, M::Write);
  s.rows(s.need(o.argmax, "argmax"), t.b0, t.b1, T2, 2 * tile, 2 * tile + 2, M::Write);
}

}  // namespace keel::ops
