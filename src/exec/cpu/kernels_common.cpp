// The CPU twins' shared helpers (kernels_common.h).
#include "exec/cpu/kernels_common.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "program/rules.h"

namespace keel::exec::cpu {

float dot_row(const uint8_t* w, DType dt, int64_t row, int64_t cols, int64_t k0, int64_t k1, const float* v) {
  const int64_t base = row * cols + k0, n = k1 - k0;
  switch (dt) {
    case DType::F32: {
      const float* r = reinterpret_cast<const float*>(w) + base;
      return dot_fixed([r](int64_t k) { return r[k]; }, v + k0, n);
    }
    case DType::BF16: {
      const uint16_t* r = reinterpret_cast<const uint16_t*>(w) + base;
      return dot_fixed([r](int64_t k) { return bf16_to_f32(r[k]); }, v + k0, n);
    }
    case DType::F16: {
      const uint16_t* r = reinterpret_cast<const uint16_t*>(w) + base;
      return dot_fixed([r](int64_t k) { return f16_to_f32(r[k]); }, v + k0, n);
    }
  }
  return 0;
}

WeightRows::WeightRows(const TaskContext& c, int32_t buf, int64_t cols)
    : w_(c.ptr[size_t(buf)]), dt_(c.dtype[size_t(buf)]), cols_(cols) {}

void WeightRows::dots(int64_t r, int64_t k0, int64_t k1, const float* in, int64_t stride, int nb, float* y) {
  if (nb == 1) {  // one token: straight from the weights
    y[0] = dot_row(w_, dt_, r, cols_, k0, k1, in);
    return;
  }
  const int64_t n = k1 - k0;
  const float* row = nullptr;
  if (dt_ == DType::F32) {
    row = reinterpret_cast<const float*>(w_) + r * cols_ + k0;
  } else {  // converted once for all nb tokens (exact, so the dots equal dot_row's)
    row_.resize(size_t(n));
    const uint16_t* h = reinterpret_cast<const uint16_t*>(w_) + r * cols_ + k0;
    if (dt_ == DType::BF16)
      for (int64_t k = 0; k < n; ++k) row_[size_t(k)] = bf16_to_f32(h[k]);
    else
      for (int64_t k = 0; k < n; ++k) row_[size_t(k)] = f16_to_f32(h[k]);
    row = row_.data();
  }
  for (int i = 0; i < nb; ++i) y[i] = dot_fixed([row](int64_t k) { return row[k]; }, in + i * stride + k0, n);
}

// n = bf16(x * rsqrt(mean(x^2) + eps) * w), the normed input every norm-matvec recomputes.
void rms_norm_bf16(const TaskContext& c, const float* x, int32_t w_buf, int64_t n, float* out) {
  const float ss = dot_fixed([x](int64_t i) { return x[i]; }, x, n);
  const float inv = 1.0f / std::sqrt(ss / float(n) + c.p->h.rms_eps);
  for (int64_t i = 0; i < n; ++i) out[i] = round_bf16(x[i] * inv * load(c, w_buf, size_t(i)));
}

void normed_input(const TaskContext& c, int32_t x_buf, int32_t norm_w, int b, int64_t H, float* out) {
  if (norm_w >= 0) return rms_norm_bf16(c, c.as<float>(x_buf) + b * H, norm_w, H, out);
  const uint16_t* a = c.as<uint16_t>(x_buf) + b * H;
  for (int64_t i = 0; i < H; ++i) out[i] = bf16_to_f32(a[i]);
}

// The q/k epilogue on one head y[hd] (fp32, from the raw bf16 projection):
// y = rmsnorm(y) * w if a head norm is given, then RoPE at `pos` on the
// half-split pairs (i, i + hd/2) with the Program's inverse frequencies.
void head_epilogue(const TaskContext& c, int32_t norm_buf, int64_t pos, float* y) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim, half = hd / 2;
  if (norm_buf >= 0) {
    float ss = 0;
    for (int64_t i = 0; i < hd; ++i) ss += y[i] * y[i];
    const float inv = 1.0f / std::sqrt(ss / float(hd) + h.rms_eps);
    for (int64_t i = 0; i < hd; ++i) y[i] = y[i] * inv * load(c, norm_buf, size_t(i));
  }
  const float* inv_freq = c.as<float>(h.buf_rope);
  for (int64_t i = 0; i < half; ++i) {
    const float ang = float(pos) * inv_freq[i];
    const float cs = std::cos(ang), sn = std::sin(ang);
    const float a = y[i], b = y[i + half];
    y[i] = a * cs - b * sn;
    y[i + half] = b * cs + a * sn;
  }
}

uint16_t* kv_slot(const TaskContext& c, int32_t cache, int b, int head, int64_t pos) {
  const auto& h = c.p->h;
  const int64_t page = c.as<int32_t>(h.buf_page_table)[program::kv_page_entry(h, b, pos)];
  KEEL_CHECK(page >= 0 && page < h.n_pages, "cpu executor: page table entry ", page, " out of range");
  return c.as<uint16_t>(cache) + program::kv_offset(h, page, head, pos, 0);
}

void append_kv(const TaskContext& c, int32_t qkv, int32_t k_norm, int32_t k_cache, int32_t v_cache, int b, int kvh,
               int64_t pos) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim;
  const uint16_t* raw = c.as<uint16_t>(qkv) + b * program::qkv_width(h);
  const uint16_t* k = raw + program::qkv_part_begin(h, 1) + kvh * hd;
  const uint16_t* v = raw + program::qkv_part_begin(h, 2) + kvh * hd;
  std::vector<float> y(static_cast<size_t>(hd));
  for (int64_t i = 0; i < hd; ++i) y[size_t(i)] = bf16_to_f32(k[i]);
  head_epilogue(c, k_norm, pos, y.data());
  uint16_t* kd = kv_slot(c, k_cache, b, kvh, pos);
  uint16_t* vd = kv_slot(c, v_cache, b, kvh, pos);
  for (int64_t i = 0; i < hd; ++i) {
    kd[i] = f32_to_bf16(y[size_t(i)]);
    vd[i] = v[i];  // already bf16: copied, not rounded twice
  }
}

void q_head(const TaskContext& c, int32_t qkv, int32_t q_norm, int b, int64_t head, int64_t pos, float* q) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim;
  const uint16_t* qh = c.as<uint16_t>(qkv) + int64_t(b) * program::qkv_width(h) + head * hd;
  for (int64_t i = 0; i < hd; ++i) q[i] = bf16_to_f32(qh[i]);
  head_epilogue(c, q_norm, pos, q);
  for (int64_t i = 0; i < hd; ++i) q[i] = round_bf16(q[i]);
}

std::pair<float, float> attend(const TaskContext& c, int32_t k_cache, int32_t v_cache, int b, int kvh, const float* q,
                               int64_t p0, int64_t p1, float* s, float* o) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim;
  float m = -INFINITY;
  for (int64_t pp = p0; pp < p1; ++pp) {
    const uint16_t* k = kv_slot(c, k_cache, b, kvh, pp);
    const float d = dot_fixed([k](int64_t i) { return bf16_to_f32(k[i]); }, q, hd);
    s[pp - p0] = d * h.attn_scale;
    m = std::max(m, s[pp - p0]);
  }
  std::fill(o, o + hd, 0.0f);
  float l = 0;
  for (int64_t pp = p0; pp < p1; ++pp) {
    const float e = std::exp(s[pp - p0] - m);
    l += e;
    const uint16_t* v = kv_slot(c, v_cache, b, kvh, pp);
    for (int64_t i = 0; i < hd; ++i) o[i] += e * bf16_to_f32(v[i]);
  }
  return {m, l};
}

}  // namespace keel::exec::cpu
