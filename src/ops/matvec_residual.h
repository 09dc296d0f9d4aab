// MatvecResidual: x[rows] += W[rows, k0:k1] . a[k0:k1] (+ bias on the k0 == 0
// slice), an fp32 atomic add when several k-slices share the rows
// (kFlagAtomicAccumulate). CPU twin: matvec_residual_cpu.cpp; device body:
// matvec_residual.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// MatvecResidual's operands by name: the only code that knows their slots.
struct MatvecResidualOperands {
  int32_t a = -1;       // a bf16[B,K]
  int32_t weight = -1;  // W[R,K]
  int32_t bias = -1;    // [R] or -1 (given to the k0 == 0 task only)
  int32_t x = -1;       // x f32[B,R] (in/out)
  static constexpr int kA = 0, kWeight = 1, kBias = 2, kX = 3;

  static KEEL_HD MatvecResidualOperands from(const TaskDesc& t) {
    return {t.buf[kA], t.buf[kWeight], t.buf[kBias], t.buf[kX]};
  }
  KEEL_HD void to(TaskDesc& t) const { t.buf[kA] = a, t.buf[kWeight] = weight, t.buf[kBias] = bias, t.buf[kX] = x; }
  bool operator==(const MatvecResidualOperands&) const = default;
};

struct MatvecResidual {
  using Operands = MatvecResidualOperands;
  static constexpr Opcode kOpcode = Opcode::MatvecResidual;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "matvec_residual",
    {"a bf16[B,K]", "W[R,K]", "bias [R] or -1 (added by the k0 == 0 task)", "x f32[B,R] (in/out)",
     "", "", "", ""},
    {"", "", "", ""},
    "x[b,rows] += W[rows,k0:k1].a[b,k0:k1] (+bias); atomic add if kFlagAtomicAccumulate"};
  // clang-format on
  static int32_t streamed_weight(const TaskDesc& t) { return Operands::from(t).weight; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

}  // namespace keel::ops
