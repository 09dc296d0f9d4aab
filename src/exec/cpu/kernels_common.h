// Helpers the CPU twins of the opcodes (src/ops/<op>_cpu.cpp) share: the
// matvec inner product per weight dtype, the normed input of a norm-matvec, the
// q/k head epilogue and the KV-cache slot. Plain loops, kept fast by their
// shape rather than by flags: every dot product adds in one fixed order
// (dot_fixed: kDotLanes partial sums, then a fixed tree), which GCC vectorizes
// at -O2/-O3 without fast-math, and a multi-token task reads each weight row
// once for all its tokens (WeightRows). A value never depends on the thread
// schedule or on which other tokens share its task.
#pragma once

#include <utility>
#include <vector>

#include <cstdint>

#include "exec/cpu/tasks.h"

namespace keel::exec::cpu {

/// Partial sums of dot_fixed: 16 floats are four SSE registers, enough
/// independent additions to hide the add latency on any x86-64.
inline constexpr int kDotLanes = 16;

/// The fixed-order fp32 dot of w(0..n) with v[0..n): partial sum j adds
/// w(i) * v[i] for i = j, j + kDotLanes, ... in turn, then the partials are
/// added pairwise (j + 8 into j, then + 4, + 2, + 1). No fast-math needed to
/// vectorize it, and its value is a function of the inputs alone. `w` maps an
/// index to the fp32 weight (a load and an exact conversion).
template <class W>
inline float dot_fixed(W w, const float* v, int64_t n) {
  float acc[kDotLanes] = {};
  int64_t i = 0;
  for (; i + kDotLanes <= n; i += kDotLanes)
#pragma GCC unroll 16  // = kDotLanes: the partials stay in registers at -O2 too
    for (int j = 0; j < kDotLanes; ++j) acc[j] += w(i + j) * v[i + j];
  for (int j = 0; i + j < n; ++j) acc[j] += w(i + j) * v[i + j];
#pragma GCC unroll 4
  for (int s = kDotLanes / 2; s > 0; s /= 2)
#pragma GCC unroll 8
    for (int j = 0; j < s; ++j) acc[j] += acc[j + s];
  return acc[0];
}

/// fp32 dot of weight row `row` (stored as dt, `cols` per row) over columns
/// [k0, k1) with v[k0, k1), in dot_fixed's order counted from k0.
float dot_row(const uint8_t* w, DType dt, int64_t row, int64_t cols, int64_t k0, int64_t k1, const float* v);

/// A weight buffer's rows as the matvec twins read them: dots(r, ...) takes
/// row r against all of a task's token inputs at once, reading (and
/// converting to fp32) the row once instead of once per token. Each token's
/// dot is exactly dot_row's, whatever the number of tokens.
class WeightRows {
 public:
  WeightRows(const TaskContext& c, int32_t buf, int64_t cols);
  /// y[i] = dot_row(row r over [k0, k1), in + i * stride) for i in [0, nb).
  void dots(int64_t r, int64_t k0, int64_t k1, const float* in, int64_t stride, int nb, float* y);

 private:
  const uint8_t* w_;
  DType dt_;
  int64_t cols_;
  std::vector<float> row_;  // row r's [k0, k1) in fp32 (BF16, F16 weights)
};

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
