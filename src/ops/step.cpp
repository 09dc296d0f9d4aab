// Step's operand checks and memory footprint (see step.h).
#include "ops/step.h"

namespace keel::ops {

void Step::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  if (program::is_prefill_lane(h, t.b0)) {  // a prefill lane: no LM head, nothing sampled
    ck.that(o.logits == -1 && o.argmax == -1, "reads logits for a prefill lane");
  } else {
    ck.is(o.logits, h.buf_logits, "logits");
    ck.is(o.argmax, h.buf_argmax, "argmax");
  }
  ck.is(o.embed, h.buf_embed, "embed");
  ck.is(o.x, h.buf_x, "x");
  ck.is(o.state, h.buf_state, "state");
  ck.is(o.tokens, h.buf_tokens, "tokens");
  ck.is(o.ring, h.buf_ring, "ring");
  ck.is(o.control, h.buf_control, "control");
  ck.that(o.n_lm_tiles == h.n_lm_tiles && t.b1 == t.b0 + 1, "has bad tiles or sequence");
}

void Step::accesses(AccessSink& s, const TaskDesc& t) {
  using M = AccessMode;
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  const uint64_t S = program::kSeqStateWords, T2 = 2 * uint64_t(h.n_lm_tiles);
  if (o.logits >= 0 || !program::is_prefill_lane(h, t.b0)) {
    s.rows(s.need(o.logits, "logits"), t.b0, t.b1, h.vocab, 0, h.vocab, M::Read);
    s.rows(s.need(o.argmax, "argmax"), t.b0, t.b1, T2, 0, T2, M::Read);
  }
  s.ws(s.need(o.control, "control"), 0, program::kControlWords, M::Read);
  s.rows(s.need(o.state, "state"), t.b0, t.b1, S, 0, S, M::Read);
  s.rows(s.need(o.tokens, "tokens"), t.b0, t.b1, h.max_context, 0, h.max_context, M::Read);
  s.rows(o.state, t.b0, t.b1, S, 0, S, M::Write);
  s.rows(o.tokens, t.b0, t.b1, h.max_context, 0, h.max_context, M::Write);
  s.rows(s.need(o.ring, "ring"), t.b0, t.b1, h.ring_len, 0, h.ring_len, M::Write);
  s.rows(s.need(o.x, "x"), t.b0, t.b1, h.hidden, 0, h.hidden, M::Write);
}

}  // namespace keel::ops
