// QkvProj's operand checks and memory footprint (see qkv_proj.h).
#include "ops/qkv_proj.h"

namespace keel::ops {

void QkvProj::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  const int part = o.part;
  ck.that(part >= 0 && part <= 2, "has a bad part (0, 1 or 2)");
  const int64_t n = (part == 0 ? h.n_heads : h.n_kv_heads) * int64_t(h.head_dim), off = qkv_part_begin(h, part);
  ck.that(o.part_row0 == off && off <= t.row0 && t.row0 < t.row1 && t.row1 <= off + n && t.k0 == 0 &&
              t.k1 == h.hidden,
          "has rows outside its part or a bad k range");
  ck.normed_input(o.x, o.norm_w);
  ck.weight(o.weight, "weight", n, h.hidden);
  ck.weight(o.bias, "bias", 1, n, true);
  ck.qkv(o.out, "out");
}

void QkvProj::accesses(AccessSink& s, const TaskDesc& t) {
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  s.rows(s.need(o.x, "x"), t.b0, t.b1, h.hidden, 0, h.hidden, AccessMode::Read);
  s.rows(s.need(o.out, "out"), t.b0, t.b1, uint64_t(qkv_width(h)), t.row0, t.row1, AccessMode::Write);
}

}  // namespace keel::ops
