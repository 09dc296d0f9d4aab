// QkvProj: the norm-matvec of one row tile of the concatenation [q; k; v]
// (+ bias) into the raw bf16 qkv activation. The head norm and RoPE are
// Attention's (q in every chunk, k in the chunk that appends it).
// CPU twin: qkv_proj_cpu.cpp; device body: qkv_proj.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// QkvProj's operands by name: the only code that knows their slots.
struct QkvProjOperands {
  int32_t x = -1;       // x f32[B,H]
  int32_t norm_w = -1;  // attn_norm w[H]
  int32_t weight = -1;  // W (q_proj|k_proj|v_proj) [n,H]
  int32_t bias = -1;    // bias [n] or -1
  int32_t out = -1;     // qkv bf16[B,(nh+2*nkv)*hd]
  int32_t part = 0;       // 0 = q, 1 = k, 2 = v
  int32_t part_row0 = 0;  // first row of that part in qkv
  // Slots in TaskDesc::buf and TaskDesc::arg.
  static constexpr int kX = 0, kNormW = 1, kWeight = 2, kBias = 3, kOut = 4;
  static constexpr int kPart = 0, kPartRow0 = 1;

  static KEEL_HD QkvProjOperands from(const TaskDesc& t) {
    return {t.buf[kX], t.buf[kNormW], t.buf[kWeight], t.buf[kBias], t.buf[kOut], t.arg[kPart], t.arg[kPartRow0]};
  }
  KEEL_HD void to(TaskDesc& t) const {
    t.buf[kX] = x, t.buf[kNormW] = norm_w, t.buf[kWeight] = weight, t.buf[kBias] = bias, t.buf[kOut] = out;
    t.arg[kPart] = part, t.arg[kPartRow0] = part_row0;
  }
  bool operator==(const QkvProjOperands&) const = default;
};

struct QkvProj {
  using Operands = QkvProjOperands;
  static constexpr Opcode kOpcode = Opcode::QkvProj;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "qkv_proj",
    {"x f32[B,H] (or normed bf16[B,H] when norm_w is -1)", "attn_norm w[H] or -1 (x normed by an rms_norm task)", "W (q_proj|k_proj|v_proj) [n,H]", "bias [n] or -1",
     "out: qkv bf16[B,(nh+2*nkv)*hd]", "", "", ""},
    {"part 0=q 1=k 2=v", "first row of that part in qkv (0, nh*hd, (nh+nkv)*hd)", "", ""},
    "n = bf16(x*rsqrt(mean(x^2)+eps)*w); qkv[b,r] = bf16(W[r-arg1].n (+bias[r-arg1])) for r in "
    "[row0,row1), rows of the concatenation [q; k; v] inside one part (n = that part's rows). Raw: "
    "the head norm and RoPE are applied by Attention (q in every chunk, k in the chunk that appends it)"};
  // clang-format on
  /// The weight matrix it streams (rows [row0 - part_row0, row1 - part_row0)).
  static int32_t streamed_weight(const TaskDesc& t) { return Operands::from(t).weight; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

}  // namespace keel::ops
