// Step: the end of a decode step for one sequence: the next token (the next
// prompt token while prefilling, else greedy over the LM-head partials or a
// sample), the output ring, the stop rules, the position, and the next
// token's embedding into x. CPU twin: step_cpu.cpp; device body: step.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// Step's operands by name: the only code that knows their slots.
struct StepOperands {
  int32_t logits = -1;   // f32[B,V]
  int32_t argmax = -1;   // LM-head partials f32[B,T,2]
  int32_t embed = -1;    // embedding W[V,H]
  int32_t x = -1;        // x f32[B,H] (out)
  int32_t state = -1;    // SeqState[B] (in/out)
  int32_t tokens = -1;   // i32[B,max_ctx] history (in/out)
  int32_t ring = -1;     // i32[B,ring_len] (out)
  int32_t control = -1;  // Control (in)
  int32_t n_lm_tiles = 0;
  static constexpr int kLogits = 0, kArgmax = 1, kEmbed = 2, kX = 3, kState = 4, kTokens = 5, kRing = 6, kControl = 7;
  static constexpr int kNLmTiles = 0;

  static KEEL_HD StepOperands from(const TaskDesc& t) {
    return {t.buf[kLogits], t.buf[kArgmax], t.buf[kEmbed], t.buf[kX],       t.buf[kState],
            t.buf[kTokens], t.buf[kRing],   t.buf[kControl], t.arg[kNLmTiles]};
  }
  KEEL_HD void to(TaskDesc& t) const {
    t.buf[kLogits] = logits, t.buf[kArgmax] = argmax, t.buf[kEmbed] = embed, t.buf[kX] = x;
    t.buf[kState] = state, t.buf[kTokens] = tokens, t.buf[kRing] = ring, t.buf[kControl] = control;
    t.arg[kNLmTiles] = n_lm_tiles;
  }
  bool operator==(const StepOperands&) const = default;
};

struct Step {
  using Operands = StepOperands;
  static constexpr Opcode kOpcode = Opcode::Step;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "step",
    {"logits f32[B,V]", "argmax partial f32[B,T,2]", "embedding W[V,H]", "x f32[B,H] (out)",
     "state SeqState[B] (in/out)", "tokens i32[B,max_ctx] (history, in/out)",
     "ring i32[B,ring_len] (out)", "control Control (in)"},
    {"n_lm_tiles (T)", "", "", ""},
    "for sequence b0: if done, nothing; if pos+1 < prompt_len the next token is tokens[pos+1] "
    "(prefill), else greedy = reduce the T partials, or sample (SeqState sampling fields) and "
    "emit it into ring[n_generated % ring_len], n_generated++, tokens[pos+1] = it; stop rules "
    "(eos, max_new, context end) set done; else pos++, token = next, x[b] = embed[next]. For a prefill "
    "lane (seq_lanes L > 1; no logits, argmax): if pos+L < prompt_len-1, pos += L, token = "
    "tokens[pos], x[b] = embed[token]; else done (a decode lane runs the prompt's last position)"};
  // clang-format on
  /// One embedding row (weight_bytes counts it; it is read, not streamed through the ring).
  static int32_t streamed_weight(const TaskDesc& t) { return Operands::from(t).embed; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

}  // namespace keel::ops
