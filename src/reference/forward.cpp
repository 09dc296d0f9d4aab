// The reference decoder forward pass, step by step as Hugging Face transformers
// computes it in float32 (eager attention):
//
//   x = embed[token]
//   per layer:  h = rmsnorm(x) ; q,k,v = h·Wq,Wk,Wv (+bias) ; [qwen3: rmsnorm each
//               q/k head] ; RoPE (rotate_half layout) on q,k ; append k,v to the
//               cache ; causal GQA attention (sliding window when set), softmax in fp32 ; x += o·Wo (+bias)
//               h = rmsnorm(x) ; x += Wdown·(silu(Wgate·h) * Wup·h)
//   logits = rmsnorm(x)·lm_head   (lm_head = embed when tied)
//
// A call processes a batch of new tokens at once (prefill) or a single token
// (decode); both run the same code. Matrix products are split across output rows
// on the keel::parallel_for pool and tiled so a batch reuses each weight tile
// from cache. Nothing here is clever on purpose: this is the oracle.
#include "reference/forward.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/parallel.h"

namespace keel::reference {
namespace {

/// Converts a tensor to fp32, checking its element count; null -> empty.
std::vector<float> to_f32(const model::TensorView* t, int64_t expect_numel) {
  if (t == nullptr) return {};
  KEEL_CHECK(t->numel() == expect_numel, "reference forward: tensor ", t->name, " in ", t->file,
             " has ", t->numel(), " elements, expected ", expect_numel);
  std::vector<float> out(static_cast<size_t>(t->numel()));
  parallel_for(out.size(), [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) out[i] = t->at(i);
  }, 1 << 16);
  return out;
}

/// Dot product with eight independent partial sums (lets the compiler vectorize
/// without -ffast-math; the fixed order keeps results deterministic).
float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float tail = 0;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

/// out[t, r] = W[r, :] · in[t, :] (+ bias[r]) for t < n, r < rows; W is [rows, cols].
/// Split over output rows; each worker walks row tiles × token tiles so a batch
/// of tokens reuses a weight tile while it is in cache.
void matmul(const float* in, int64_t n, const std::vector<float>& w, const std::vector<float>& bias,
            int64_t rows, int64_t cols, float* out) {
  constexpr int64_t kRowTile = 32, kTokTile = 16;
  const size_t grain = size_t(std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, cols * n)));
  parallel_for(size_t(rows), [&](size_t r0, size_t r1) {
    for (int64_t rb = int64_t(r0); rb < int64_t(r1); rb += kRowTile) {
      const int64_t re = std::min<int64_t>(rb + kRowTile, int64_t(r1));
      for (int64_t tb = 0; tb < n; tb += kTokTile) {
        const int64_t te = std::min<int64_t>(tb + kTokTile, n);
        for (int64_t r = rb; r < re; ++r) {
          const float* wr = w.data() + r * cols;
          const float b = bias.empty() ? 0.0f : bias[size_t(r)];
          for (int64_t t = tb; t < te; ++t) out[t * rows + r] = dot(wr, in + t * cols, cols) + b;
        }
      }
    }
  }, grain);
}

/// y = x / sqrt(mean(x²) + eps) * w over one vector of length d (y may alias x).
void rmsnorm(const float* x, const float* w, int64_t d, double eps, float* y) {
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) ss += double(x[i]) * double(x[i]);
  const float inv = float(1.0 / std::sqrt(ss / double(d) + eps));
  for (int64_t i = 0; i < d; ++i) y[i] = (x[i] * inv) * w[i];
}

/// rmsnorm applied to each of n rows of length d.
void rmsnorm_rows(const float* x, const std::vector<float>& w, int64_t n, int64_t d, double eps,
                  float* y) {
  for (int64_t t = 0; t < n; ++t) rmsnorm(x + t * d, w.data(), d, eps, y + t * d);
}

float silu(float g) { return g / (1.0f + std::exp(-g)); }

}  // namespace

Forward::Forward(const model::Model& m, int64_t max_context) : cfg_(m.config) {
  const model::ModelConfig& c = cfg_;
  KEEL_CHECK(c.hidden > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 &&
                 c.vocab > 0 && c.intermediate > 0,
             "reference forward: incomplete config for ", m.dir);
  KEEL_CHECK(c.n_heads % c.n_kv_heads == 0, "reference forward: ", c.n_heads,
             " attention heads are not a multiple of ", c.n_kv_heads, " key/value heads");
  KEEL_CHECK(!c.mlp_bias, "reference forward: mlp_bias is not supported (", m.dir, ")");
  KEEL_CHECK(c.head_dim % 2 == 0, "reference forward: head_dim ", c.head_dim, " is odd");
  KEEL_CHECK(int64_t(m.layers.size()) == c.n_layers, "reference forward: model has ", m.layers.size(),
             " layers, config says ", c.n_layers);
  KEEL_CHECK(m.embed && m.final_norm && m.lm_head, "reference forward: model ", m.dir,
             " is missing the embedding, final norm or LM head");
  max_ctx_ = max_context > 0 ? max_context : c.max_position;
  KEEL_CHECK(max_ctx_ > 0, "reference forward: no context length (max_position_embeddings is ",
             c.max_position, ")");

  const int64_t H = c.hidden, I = c.intermediate, qd = c.q_dim(), kvd = c.kv_dim(), hd = c.head_dim;
  embed_ = to_f32(m.embed, c.vocab * H);
  final_norm_ = to_f32(m.final_norm, H);
  if (m.lm_head != m.embed) lm_head_ = to_f32(m.lm_head, c.vocab * H);
  layers_.resize(size_t(c.n_layers));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const model::LayerWeights& s = m.layers[size_t(l)];
    Layer& d = layers_[size_t(l)];
    KEEL_CHECK(s.attn_norm && s.wq && s.wk && s.wv && s.wo && s.mlp_norm && s.w_gate && s.w_up &&
                   s.w_down,
               "reference forward: layer ", l, " of ", m.dir, " is missing a weight");
    KEEL_CHECK(!c.qk_norm || (s.q_norm && s.k_norm), "reference forward: layer ", l,
               " has no q_norm/k_norm");
    d.attn_norm = to_f32(s.attn_norm, H);
    d.wq = to_f32(s.wq, qd * H);
    d.wk = to_f32(s.wk, kvd * H);
    d.wv = to_f32(s.wv, kvd * H);
    d.bq = to_f32(s.bq, qd);
    d.bk = to_f32(s.bk, kvd);
    d.bv = to_f32(s.bv, kvd);
    if (c.qk_norm) {
      d.q_norm = to_f32(s.q_norm, hd);
      d.k_norm = to_f32(s.k_norm, hd);
    }
    d.wo = to_f32(s.wo, H * qd);
    d.bo = to_f32(s.bo, H);
    d.mlp_norm = to_f32(s.mlp_norm, H);
    d.w_gate = to_f32(s.w_gate, I * H);
    d.w_up = to_f32(s.w_up, I * H);
    d.w_down = to_f32(s.w_down, H * I);
  }
  inv_freq_ = rope_inv_freq(c);
  attn_factor_ = model::rope_attention_factor(c);
  KEEL_CHECK(c.rope.type != model::RopeType::Dynamic || max_ctx_ <= c.max_position,
             "reference forward: dynamic RoPE is implemented up to max_position_embeddings (", c.max_position,
             "), asked for a context of ", max_ctx_);
}

void Forward::truncate(int64_t n) {
  KEEL_CHECK(n >= 0 && n <= pos_, "reference: truncate to ", n, " positions of ", pos_);
  const size_t kv = size_t(cfg_.n_kv_heads * cfg_.head_dim);
  for (Layer& L : layers_) {
    L.k_cache.resize(std::min(L.k_cache.size(), size_t(n) * kv));
    L.v_cache.resize(std::min(L.v_cache.size(), size_t(n) * kv));
  }
  pos_ = n;
}

void Forward::reset() {
  pos_ = 0;
  for (Layer& L : layers_) {
    L.k_cache.clear();
    L.v_cache.clear();
  }
}

/// Rotates each of `n_heads` consecutive head vectors at position `pos` in the
/// Hugging Face half-split layout: pairs are (i, i + head_dim/2).
void Forward::rope(float* heads, int64_t n_heads, int64_t pos) const {
  const int64_t hd = cfg_.head_dim, half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = double(pos) * double(inv_freq_[size_t(i)]);
    // transformers scales cos and sin by the RoPE attention factor (yarn; 1 otherwise)
    const float cs = float(std::cos(angle) * attn_factor_), sn = float(std::sin(angle) * attn_factor_);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* x = heads + h * hd;
      const float x0 = x[i], x1 = x[i + half];
      x[i] = x0 * cs - x1 * sn;
      x[i + half] = x1 * cs + x0 * sn;
    }
  }
}

/// Causal attention for n new tokens at positions first .. first+n-1, whose keys
/// and values are already in the cache: out[t, head] = softmax(q·K / sqrt(hd)) · V
/// over cache positions [0, first + t], or only the last `window` of them in a
/// sliding-window layer (transformers' mask: key position > query position -
/// window). Query head h reads key/value head h / (nh / nkv).
void Forward::attention(const Layer& L, int64_t window, const std::vector<float>& q, int64_t first, int64_t n,
                        std::vector<float>& out) const {
  const int64_t nh = cfg_.n_heads, hd = cfg_.head_dim, kvd = cfg_.kv_dim();
  const int64_t group = nh / cfg_.n_kv_heads;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  parallel_for(size_t(n * nh), [&](size_t b, size_t e) {
    std::vector<float> score;
    for (size_t item = b; item < e; ++item) {
      const int64_t t = int64_t(item) / nh, h = int64_t(item) % nh;
      const int64_t len = first + t + 1;  // causal: sees itself and everything before
      const int64_t from = window > 0 ? std::max<int64_t>(0, len - window) : 0;
      const float* qh = q.data() + t * nh * hd + h * hd;
      const int64_t kv_off = (h / group) * hd;
      score.resize(size_t(len));
      float mx = -INFINITY;
      for (int64_t p = from; p < len; ++p) {
        score[size_t(p)] = dot(qh, L.k_cache.data() + p * kvd + kv_off, hd) * scale;
        mx = std::max(mx, score[size_t(p)]);
      }
      float sum = 0;
      for (int64_t p = from; p < len; ++p) {
        score[size_t(p)] = std::exp(score[size_t(p)] - mx);
        sum += score[size_t(p)];
      }
      float* o = out.data() + t * nh * hd + h * hd;
      std::fill(o, o + hd, 0.0f);
      for (int64_t p = from; p < len; ++p) {
        const float pw = score[size_t(p)] / sum;
        const float* v = L.v_cache.data() + p * kvd + kv_off;
        for (int64_t i = 0; i < hd; ++i) o[i] += pw * v[i];
      }
    }
  });
}

std::vector<float> Forward::forward(std::span<const int32_t> tokens, bool all_logits) {
  const model::ModelConfig& c = cfg_;
  const int64_t n = int64_t(tokens.size());
  KEEL_CHECK(n > 0, "reference forward: no tokens to process");
  if (pos_ + n > max_ctx_) {
    fail("prompt longer than the context: ", pos_, " tokens cached + ", n, " new = ", pos_ + n,
         " > context length ", max_ctx_);
  }
  const int64_t H = c.hidden, I = c.intermediate, V = c.vocab, hd = c.head_dim;
  const int64_t nh = c.n_heads, nkv = c.n_kv_heads, qd = c.q_dim(), kvd = c.kv_dim();

  std::vector<float> x(size_t(n * H));
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = tokens[size_t(t)];
    KEEL_CHECK(id >= 0 && id < V, "token id ", id, " at index ", t, " is outside the vocabulary [0, ",
               V, ")");
    std::copy_n(embed_.data() + int64_t(id) * H, H, x.data() + t * H);
  }

  std::vector<float> h(size_t(n * H)), q(size_t(n * qd)), k(size_t(n * kvd)), v(size_t(n * kvd));
  std::vector<float> attn(size_t(n * qd)), gate(size_t(n * I)), up(size_t(n * I));
  const int64_t first = pos_;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Layer& L = layers_[size_t(l)];
    // attention block
    rmsnorm_rows(x.data(), L.attn_norm, n, H, c.rms_eps, h.data());
    matmul(h.data(), n, L.wq, L.bq, qd, H, q.data());
    matmul(h.data(), n, L.wk, L.bk, kvd, H, k.data());
    matmul(h.data(), n, L.wv, L.bv, kvd, H, v.data());
    for (int64_t t = 0; t < n; ++t) {
      float* qt = q.data() + t * qd;
      float* kt = k.data() + t * kvd;
      if (c.qk_norm) {
        for (int64_t i = 0; i < nh; ++i) rmsnorm(qt + i * hd, L.q_norm.data(), hd, c.rms_eps, qt + i * hd);
        for (int64_t i = 0; i < nkv; ++i) rmsnorm(kt + i * hd, L.k_norm.data(), hd, c.rms_eps, kt + i * hd);
      }
      rope(qt, nh, first + t);
      rope(kt, nkv, first + t);
    }
    L.k_cache.resize(size_t((first + n) * kvd));
    L.v_cache.resize(size_t((first + n) * kvd));
    std::copy(k.begin(), k.end(), L.k_cache.begin() + first * kvd);
    std::copy(v.begin(), v.end(), L.v_cache.begin() + first * kvd);
    attention(L, c.window(l), q, first, n, attn);
    matmul(attn.data(), n, L.wo, L.bo, H, qd, h.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += h[i];

    // MLP block
    rmsnorm_rows(x.data(), L.mlp_norm, n, H, c.rms_eps, h.data());
    matmul(h.data(), n, L.w_gate, {}, I, H, gate.data());
    matmul(h.data(), n, L.w_up, {}, I, H, up.data());
    for (size_t i = 0; i < gate.size(); ++i) gate[i] = silu(gate[i]) * up[i];
    matmul(gate.data(), n, L.w_down, {}, H, I, h.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += h[i];
  }
  pos_ = first + n;

  // final norm and LM head, over every position or only the last
  const int64_t rows = all_logits ? n : 1;
  const float* xs = x.data() + (n - rows) * H;
  rmsnorm_rows(xs, final_norm_, rows, H, c.rms_eps, h.data());
  std::vector<float> logits(size_t(rows * V));
  matmul(h.data(), rows, lm_head_.empty() ? embed_ : lm_head_, {}, V, H, logits.data());
  return logits;
}

}  // namespace keel::reference
