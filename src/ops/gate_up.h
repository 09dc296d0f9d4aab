// GateUp: the norm-matvec of a row tile of the gate and up projections,
// h = bf16(silu(Wg.n) * (Wu.n)). CPU twin: gate_up_cpu.cpp; device body: gate_up.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// GateUp's operands by name: the only code that knows their slots.
struct GateUpOperands {
  int32_t x = -1;          // x f32[B,H]
  int32_t norm_w = -1;     // post_attention_layernorm w[H]
  int32_t gate_w = -1;     // gate_proj W[I,H]
  int32_t up_w = -1;       // up_proj W[I,H]
  int32_t gate_bias = -1;  // [I] or -1
  int32_t up_bias = -1;    // [I] or -1
  int32_t out = -1;        // h bf16[B,I]
  static constexpr int kX = 0, kNormW = 1, kGateW = 2, kUpW = 3, kGateBias = 4, kUpBias = 5, kOut = 6;

  static KEEL_HD GateUpOperands from(const TaskDesc& t) {
    return {t.buf[kX], t.buf[kNormW], t.buf[kGateW], t.buf[kUpW], t.buf[kGateBias], t.buf[kUpBias], t.buf[kOut]};
  }
  KEEL_HD void to(TaskDesc& t) const {
    t.buf[kX] = x, t.buf[kNormW] = norm_w, t.buf[kGateW] = gate_w, t.buf[kUpW] = up_w;
    t.buf[kGateBias] = gate_bias, t.buf[kUpBias] = up_bias, t.buf[kOut] = out;
  }
  bool operator==(const GateUpOperands&) const = default;
};

struct GateUp {
  using Operands = GateUpOperands;
  static constexpr Opcode kOpcode = Opcode::GateUp;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "gate_up",
    {"x f32[B,H] (or normed bf16[B,H] when norm_w is -1)", "post_attention_layernorm w[H] or -1 (x normed by an rms_norm task)", "gate_proj W[I,H]", "up_proj W[I,H]",
     "gate bias or -1", "up bias or -1", "out: h bf16[B,I]", ""},
    {"", "", "", ""},
    "n = bf16(rmsnorm(x)*w); h[b,rows] = bf16(silu(Wg[rows].n) * (Wu[rows].n))"};
  // clang-format on
  /// The first of the two matrices it streams (both have the same dtype).
  static int32_t streamed_weight(const TaskDesc& t) { return Operands::from(t).gate_w; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

}  // namespace keel::ops
