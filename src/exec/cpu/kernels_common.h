// Helpers the CPU twins of the opcodes (src/ops/<op>_cpu.cpp) share: the
// matvec inner product per weight dtype, the normed input of a norm-matvec, the
// q/k head epilogue and the KV-cache slot. Plain loops: the CPU executor is the
// oracle, not the fast path.
#pragma once

#include <utility>

#include <cstdint>

#include "exec/cpu/tasks.h"

namespace keel::exec::cpu {

/// fp32 dot of weight row `row` (stored as dt, `cols` per row) over columns [k0, k1) with v.
float dot_row(const uint8_t* w, DType dt, int64_t row, int64_t cols, int64_t k0, int64_t k1, const float* v);

/// Element i of buffer `buf` as fp32.
inline float load(const TaskContext& c, int32_t buf, size_t i) {
  return load_as_f32(c.ptr[size_t(buf)], c.dtype[size_t(buf)], i);
}

/// n = bf16(x * rsqrt(mean(x^2) + eps) * w), the normed input every norm-matvec recomputes.
void rms_norm_bf16(const TaskContext& c, const float* x, int32_t w_buf, int64_t n, float* out);

/// A norm-matvec's input row b (H values): rms_norm_bf16 of x[b] with norm_w,
/// or, when norm_w is -1, row b of the bf16 rows an RmsNorm task normed.
void normed_input(const TaskContext& c, int32_t x_buf, int32_t norm_w, int b, int64_t H, float* out);

/// The q/k epilogue on one head y[hd] (fp32, from the raw bf16 projection):
/// y = rmsnorm(y) * w if a head norm is given (norm_buf >= 0), then RoPE at
/// `pos` on the half-split pairs (i, i + hd/2) with the Program's inverse frequencies.
void head_epilogue(const TaskContext& c, int32_t norm_buf, int64_t pos, float* y);

/// The cache slot (head_dim bf16) of (sequence b, kv head, pos) in KV buffer `cache`.
uint16_t* kv_slot(const TaskContext& c, int32_t cache, int b, int head, int64_t pos);

/// Appends lane b's k (after its epilogue with k_norm, rounded to bf16) and
/// raw v of kv head kvh from the raw qkv rows into the caches at pos.
void append_kv(const TaskContext& c, int32_t qkv, int32_t k_norm, int32_t k_cache, int32_t v_cache, int b, int kvh,
               int64_t pos);

/// q head `head` of lane b at pos: the raw row of qkv through its epilogue
/// (q_norm, RoPE) in fp32, then rounded to bf16 (q's rounding point), into q[hd].
void q_head(const TaskContext& c, int32_t qkv, int32_t q_norm, int b, int64_t head, int64_t pos, float* q);

/// One q head's softmax attention over positions [p0, p1) of lane b's kv head
/// kvh in the caches, fp32: o[hd] = sum exp(s - m) v unnormalised, with
/// s = q.k * attn_scale; returns (m, l) = the largest score and sum exp(s - m)
/// (-inf and 0 for an empty range). `s` is scratch of p1 - p0 floats.
std::pair<float, float> attend(const TaskContext& c, int32_t k_cache, int32_t v_cache, int b, int kvh, const float* q,
                               int64_t p0, int64_t p1, float* s, float* o);

}  // namespace keel::exec::cpu
