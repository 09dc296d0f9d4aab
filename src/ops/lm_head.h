// LmHead: logits[rows] = W[rows] . norm(x) for one row tile of the vocabulary,
// plus the tile's (max, lowest argmax) partial that Step reduces for greedy
// decoding. CPU twin: lm_head_cpu.cpp; device body: lm_head.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// LmHead's operands by name: the only code that knows their slots.
struct LmHeadOperands {
  int32_t x = -1;       // x f32[B,H]
  int32_t norm_w = -1;  // final norm w[H]
  int32_t weight = -1;  // lm_head W[V,H] (or the tied embedding)
  int32_t logits = -1;  // f32[B,V]
  int32_t argmax = -1;  // partials f32[B,T,2] (value, index bits)
  int32_t tile = 0;     // this task's tile index in argmax
  static constexpr int kX = 0, kNormW = 1, kWeight = 2, kLogits = 3, kArgmax = 4;
  static constexpr int kTile = 0;

  static KEEL_HD LmHeadOperands from(const TaskDesc& t) {
    return {t.buf[kX], t.buf[kNormW], t.buf[kWeight], t.buf[kLogits], t.buf[kArgmax], t.arg[kTile]};
  }
  KEEL_HD void to(TaskDesc& t) const {
    t.buf[kX] = x, t.buf[kNormW] = norm_w, t.buf[kWeight] = weight, t.buf[kLogits] = logits;
    t.buf[kArgmax] = argmax, t.arg[kTile] = tile;
  }
  bool operator==(const LmHeadOperands&) const = default;
};

struct LmHead {
  using Operands = LmHeadOperands;
  static constexpr Opcode kOpcode = Opcode::LmHead;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "lm_head",
    {"x f32[B,H] (or normed bf16[B,H] when norm_w is -1)", "final norm w[H] or -1 (x normed by an rms_norm task)", "lm_head W[V,H] (or the tied embedding)",
     "out: logits f32[B,V]", "out: argmax partial f32[B,T,2] (value, index bits)", "", "", ""},
    {"tile index", "", "", ""},
    "n = bf16(rmsnorm(x)*w); logits[b,rows] = W[rows].n; partial[b,tile] = (max, lowest argmax)"};
  // clang-format on
  static int32_t streamed_weight(const TaskDesc& t) { return Operands::from(t).weight; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

}  // namespace keel::ops
