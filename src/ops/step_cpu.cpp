// Step's CPU twin (see step.h): the next token (prefill, greedy over the
// LM-head partials, or program::sample_token), the ring, the stop rules, the
// position and the next embedding.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "exec/cpu/kernels_common.h"
#include "ops/step.h"
#include "program/rules.h"
#include "program/sampling.h"

namespace keel::ops {

using namespace exec::cpu;
using program::Control;
using program::SeqState;
using program::StopReason;

void Step::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  const auto& h = c.p->h;
  const int b = t.b0;
  const int64_t V = h.vocab, H = h.hidden;
  SeqState& s = c.as<SeqState>(o.state)[b];
  if (s.done) return;
  const int64_t lanes = program::lane_width(h, b);  // > 1: a prefill lane (no logits)
  float* logits = lanes == 1 ? c.as<float>(o.logits) + b * V : nullptr;
  if (c.hooks && c.hooks->capture && lanes == 1) c.hooks->capture(b, logits);
  const Control& ctl = *c.as<Control>(o.control);
  if (__atomic_load_n(&ctl.stop_request, __ATOMIC_RELAXED)) {  // the host writes it asynchronously
    s.done = 1;
    s.stop_reason = int32_t(StopReason::Stopped);
    return;
  }
  int32_t* tokens = c.as<int32_t>(o.tokens) + int64_t(b) * h.max_context;
  int32_t next;
  if (lanes > 1) {  // a prefill lane: `lanes` positions on, or done before the prompt's last position
    if (s.pos + lanes >= s.prompt_len - 1) {
      s.done = 1;
      return;
    }
    next = tokens[s.pos + lanes];
  } else if (s.pos + 1 < s.prompt_len) {
    next = tokens[s.pos + 1];
  } else {
    if (program::context_full(s.pos + 1, h.max_context)) {  // a prompt of max_context tokens: nothing to emit
      s.done = 1;
      s.stop_reason = int32_t(StopReason::Context);
      return;
    }
    if (s.temperature <= 0 && s.repetition_penalty == 1.0f) {
      const float* part = c.as<float>(o.argmax) + int64_t(b) * o.n_lm_tiles * 2;
      float best = -INFINITY;
      next = 0;
      bool any = false;
      for (int tile = 0; tile < o.n_lm_tiles; ++tile) {
        int32_t idx;
        std::memcpy(&idx, &part[tile * 2 + 1], 4);
        if (!any || part[tile * 2] > best || (part[tile * 2] == best && idx < next)) {
          best = part[tile * 2];
          next = idx;
          any = true;
        }
      }
    } else {
      const program::SamplingParams sp = program::sampling_of(s);
      next = program::sample_token(logits, V, tokens, s.pos + 1, sp,
                                   program::rng_uniform(sp.seed, 0, uint32_t(s.draw0 + s.n_generated)));
    }
    // Over the logits it was drawn from (after the penalty and temperature
    // sample_token applied in place), before any truncation.
    const float lp = s.want_logprob ? program::token_logprob(logits, V, next) : NAN;
    int32_t* ring = c.as<int32_t>(o.ring) + int64_t(b) * h.ring_len;
    ring[s.n_generated % h.ring_len] = next;
    s.n_generated++;
    if (s.pos + 1 < h.max_context) tokens[s.pos + 1] = next;
    if (c.hooks && c.hooks->on_token) c.hooks->on_token(b, next, lp);
    const StopReason stop = program::stop_after_token(program::is_eos(ctl, next), false, s.n_generated, s.max_new,
                                                      int64_t(s.pos) + 2, h.max_context);
    if (stop != StopReason::None) {
      s.done = 1;
      s.stop_reason = int32_t(stop);
      return;
    }
  }
  KEEL_CHECK(next >= 0 && next < V, "cpu executor: token ", next, " out of the vocabulary");
  s.pos += int32_t(lanes);
  s.token = next;
  float* x = c.as<float>(o.x) + b * H;
  for (int64_t i = 0; i < H; ++i) x[i] = load(c, o.embed, size_t(next) * H + i);
}

}  // namespace keel::ops
