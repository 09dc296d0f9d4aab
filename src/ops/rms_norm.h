// RmsNorm: the normed rows of the residual stream, bf16, for the norm-matvecs
// of a batch Program (QkvProj, GateUp, LmHead with norm_w = -1 read them). A
// batch-1 Program folds the norm into each norm-matvec task instead (each
// recomputes it from x); with several sequences that would read x [B,H] in
// every task, so the compiler makes the norm its own operator (compiler/fuse).
// CPU twin: rms_norm_cpu.cpp; device body: rms_norm.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// RmsNorm's operands by name: the only code that knows their slots.
struct RmsNormOperands {
  int32_t x = -1;       // x f32[B,H]
  int32_t norm_w = -1;  // norm w[H]
  int32_t out = -1;     // normed bf16[B,H]
  static constexpr int kX = 0, kNormW = 1, kOut = 2;

  static KEEL_HD RmsNormOperands from(const TaskDesc& t) { return {t.buf[kX], t.buf[kNormW], t.buf[kOut]}; }
  KEEL_HD void to(TaskDesc& t) const { t.buf[kX] = x, t.buf[kNormW] = norm_w, t.buf[kOut] = out; }
  bool operator==(const RmsNormOperands&) const = default;
};

struct RmsNorm {
  using Operands = RmsNormOperands;
  static constexpr Opcode kOpcode = Opcode::RmsNorm;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "rms_norm",
    {"x f32[B,H]", "norm w[H]", "out: normed bf16[B,H]", "", "", "", "", ""},
    {"", "", "", ""},
    "out[b] = bf16(x[b]*rsqrt(mean(x[b]^2)+eps)*w) for b in [b0,b1): the input of the norm-matvecs "
    "(qkv_proj, gate_up, lm_head with norm_w = -1) of a batch Program"};
  // clang-format on
  /// Streams no weights (its norm weight is read, not streamed).
  static int32_t streamed_weight(const TaskDesc&) { return -1; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

}  // namespace keel::ops
