// CPU task implementations. Loops are written plainly (the CPU executor is the
// oracle, not the fast path); the matvec inner product is specialised per
// weight dtype so tests on real checkpoints stay quick.
#include "exec/cpu/tasks.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "program/rules.h"
#include "program/sampling.h"

namespace keel::exec::cpu {

using program::Control;
using program::Opcode;
using program::SeqState;
using program::StopReason;

namespace {

// fp32 dot of weight row (any dtype) with an fp32 vector.
float dot_row(const uint8_t* w, DType dt, int64_t row, int64_t cols, int64_t k0, int64_t k1, const float* v) {
  float acc = 0;
  switch (dt) {
    case DType::F32: {
      const float* r = reinterpret_cast<const float*>(w) + row * cols;
      for (int64_t k = k0; k < k1; ++k) acc += r[k] * v[k];
      break;
    }
    case DType::BF16: {
      const uint16_t* r = reinterpret_cast<const uint16_t*>(w) + row * cols;
      for (int64_t k = k0; k < k1; ++k) acc += bf16_to_f32(r[k]) * v[k];
      break;
    }
    case DType::F16: {
      const uint16_t* r = reinterpret_cast<const uint16_t*>(w) + row * cols;
      for (int64_t k = k0; k < k1; ++k) acc += f16_to_f32(r[k]) * v[k];
      break;
    }
  }
  return acc;
}

float load(const TaskContext& c, int32_t buf, size_t i) { return load_as_f32(c.ptr[size_t(buf)], c.dtype[size_t(buf)], i); }

// n = bf16(x * rsqrt(mean(x^2) + eps) * w), the normed input every norm-matvec recomputes.
void rms_norm_bf16(const TaskContext& c, const float* x, int32_t w_buf, int64_t n, float* out) {
  float ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / float(n) + c.p->h.rms_eps);
  for (int64_t i = 0; i < n; ++i) out[i] = round_bf16(x[i] * inv * load(c, w_buf, size_t(i)));
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

}  // namespace

void qkv_proj(const TaskContext& c, const TaskDesc& t) {
  const auto& h = c.p->h;
  const int64_t H = h.hidden, width = program::qkv_width(h), off = t.arg[1];
  std::vector<float> n(static_cast<size_t>(H));
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_bf16(c, c.as<float>(t.buf[0]) + b * H, t.buf[1], H, n.data());
    uint16_t* out = c.as<uint16_t>(t.buf[4]) + b * width;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      float y = dot_row(c.ptr[size_t(t.buf[2])], c.dtype[size_t(t.buf[2])], r - off, H, 0, H, n.data());
      if (t.buf[3] >= 0) y += load(c, t.buf[3], size_t(r - off));
      out[r] = f32_to_bf16(y);
    }
  }
}

void gate_up(const TaskContext& c, const TaskDesc& t) {
  const auto& h = c.p->h;
  const int64_t H = h.hidden, I = h.intermediate;
  std::vector<float> n(static_cast<size_t>(H));
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_bf16(c, c.as<float>(t.buf[0]) + b * H, t.buf[1], H, n.data());
    uint16_t* out = c.as<uint16_t>(t.buf[6]) + b * I;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      float g = dot_row(c.ptr[size_t(t.buf[2])], c.dtype[size_t(t.buf[2])], r, H, 0, H, n.data());
      float u = dot_row(c.ptr[size_t(t.buf[3])], c.dtype[size_t(t.buf[3])], r, H, 0, H, n.data());
      if (t.buf[4] >= 0) g += load(c, t.buf[4], size_t(r));
      if (t.buf[5] >= 0) u += load(c, t.buf[5], size_t(r));
      out[r] = f32_to_bf16(g / (1.0f + std::exp(-g)) * u);
    }
  }
}

namespace {

// The chunk at pos appends k (after its epilogue, rounded to bf16) and the raw v.
void append_kv(const TaskContext& c, const TaskDesc& t, int64_t pos) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim;
  const int b = t.b0, kvh = t.arg[0];
  const uint16_t* raw = c.as<uint16_t>(t.buf[0]) + b * program::qkv_width(h);
  const uint16_t* k = raw + program::qkv_part_begin(h, 1) + kvh * hd;
  const uint16_t* v = raw + program::qkv_part_begin(h, 2) + kvh * hd;
  std::vector<float> y(static_cast<size_t>(hd));
  for (int64_t i = 0; i < hd; ++i) y[size_t(i)] = bf16_to_f32(k[i]);
  head_epilogue(c, t.buf[6], pos, y.data());
  uint16_t* kd = kv_slot(c, t.buf[1], b, kvh, pos);
  uint16_t* vd = kv_slot(c, t.buf[2], b, kvh, pos);
  for (int64_t i = 0; i < hd; ++i) {
    kd[i] = f32_to_bf16(y[size_t(i)]);
    vd[i] = v[i];  // already bf16: copied, not rounded twice
  }
}

// The last chunk of the step: the C partials of each head, log-sum-exp in chunk order.
void merge_chunks(const TaskContext& c, const TaskDesc& t) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[2];
  const int b = t.b0, kvh = t.arg[0];
  const float* part = c.as<float>(t.buf[3]) + (int64_t(b) * h.n_kv_heads + kvh) * C * g * (hd + 2);
  uint16_t* out = c.as<uint16_t>(t.buf[7]) + int64_t(b) * h.n_heads * hd;
  std::vector<float> o(static_cast<size_t>(hd));
  for (int64_t j = 0; j < g; ++j) {
    float M = -INFINITY;
    for (int64_t ch = 0; ch < C; ++ch) M = std::max(M, part[(ch * g + j) * (hd + 2) + hd]);
    std::fill(o.begin(), o.end(), 0.0f);
    float L = 0;
    for (int64_t ch = 0; ch < C; ++ch) {
      const float* blk = part + (ch * g + j) * (hd + 2);
      if (blk[hd + 1] == 0.0f) continue;  // empty chunk
      const float sc = std::exp(blk[hd] - M);
      L += blk[hd + 1] * sc;
      for (int64_t i = 0; i < hd; ++i) o[size_t(i)] += blk[i] * sc;
    }
    for (int64_t i = 0; i < hd; ++i) out[(kvh * g + j) * hd + i] = f32_to_bf16(o[size_t(i)] / L);
  }
}

}  // namespace

void attention(const TaskContext& c, const TaskDesc& t) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[2];
  const int b = t.b0, kvh = t.arg[0], chunk = t.arg[1];
  const int64_t pos = c.as<SeqState>(t.buf[4])[b].pos;
  int64_t p0 = 0, p1 = 0;
  program::attn_chunk_range(pos, chunk, C, &p0, &p1);
  if (p0 <= pos && pos < p1) append_kv(c, t, pos);
  float* part = c.as<float>(t.buf[3]) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  std::vector<float> q(static_cast<size_t>(hd)), o(static_cast<size_t>(hd)), s(size_t(std::max<int64_t>(p1 - p0, 1)));
  for (int64_t j = 0; j < g; ++j) {
    // q epilogue: head norm and RoPE in fp32 on the raw row, then bf16 (q's rounding point).
    const uint16_t* qh = c.as<uint16_t>(t.buf[0]) + int64_t(b) * program::qkv_width(h) + (kvh * g + j) * hd;
    for (int64_t i = 0; i < hd; ++i) q[size_t(i)] = bf16_to_f32(qh[i]);
    head_epilogue(c, t.buf[5], pos, q.data());
    for (int64_t i = 0; i < hd; ++i) q[size_t(i)] = round_bf16(q[size_t(i)]);
    float m = -INFINITY;
    for (int64_t pp = p0; pp < p1; ++pp) {
      const uint16_t* k = kv_slot(c, t.buf[1], b, kvh, pp);
      float d = 0;
      for (int64_t i = 0; i < hd; ++i) d += q[size_t(i)] * bf16_to_f32(k[i]);
      s[size_t(pp - p0)] = d * h.attn_scale;
      m = std::max(m, s[size_t(pp - p0)]);
    }
    std::fill(o.begin(), o.end(), 0.0f);
    float l = 0;
    for (int64_t pp = p0; pp < p1; ++pp) {
      const float e = std::exp(s[size_t(pp - p0)] - m);
      l += e;
      const uint16_t* v = kv_slot(c, t.buf[2], b, kvh, pp);
      for (int64_t i = 0; i < hd; ++i) o[size_t(i)] += e * bf16_to_f32(v[i]);
    }
    float* dst = part + j * (hd + 2);
    std::copy(o.begin(), o.end(), dst);
    dst[hd] = m;
    dst[hd + 1] = l;
  }
  // Arrival: the chunk that completes this step's C adds merges (acq_rel: it sees
  // every other chunk's partial, and they see nothing of its merge they need).
  KEEL_CHECK(c.counters != nullptr, "cpu executor: attention task without counters");
  const uint32_t old = c.counters[t.arg[3]].fetch_add(1, std::memory_order_acq_rel);
  if ((old + 1) % uint32_t(C) == 0) merge_chunks(c, t);
}

void matvec_residual(const TaskContext& c, const TaskDesc& t) {
  const program::BufferDesc& a = c.p->buffer(t.buf[0]);
  const program::BufferDesc& w = c.p->buffer(t.buf[1]);
  const program::BufferDesc& x = c.p->buffer(t.buf[3]);
  std::vector<float> av(static_cast<size_t>(a.cols));
  for (int b = t.b0; b < t.b1; ++b) {
    const uint16_t* ab = c.as<uint16_t>(t.buf[0]) + b * a.cols;
    for (int64_t k = t.k0; k < t.k1; ++k) av[size_t(k)] = bf16_to_f32(ab[k]);
    float* xb = c.as<float>(t.buf[3]) + b * x.cols;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      float acc = dot_row(c.ptr[size_t(t.buf[1])], c.dtype[size_t(t.buf[1])], r, w.cols, t.k0, t.k1, av.data());
      if (t.buf[2] >= 0) acc += load(c, t.buf[2], size_t(r));
      if (t.flags & program::kFlagAtomicAccumulate)
        std::atomic_ref<float>(xb[r]).fetch_add(acc, std::memory_order_relaxed);
      else
        xb[r] += acc;
    }
  }
}

void lm_head(const TaskContext& c, const TaskDesc& t) {
  const auto& h = c.p->h;
  const int64_t H = h.hidden, V = h.vocab, T = h.n_lm_tiles;
  std::vector<float> n(static_cast<size_t>(H));
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_bf16(c, c.as<float>(t.buf[0]) + b * H, t.buf[1], H, n.data());
    float* logits = c.as<float>(t.buf[3]) + b * V;
    float best = -INFINITY;
    int32_t best_i = t.row0;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      logits[r] = dot_row(c.ptr[size_t(t.buf[2])], c.dtype[size_t(t.buf[2])], r, H, 0, H, n.data());
      if (logits[r] > best) {
        best = logits[r];
        best_i = int32_t(r);
      }
    }
    float* part = c.as<float>(t.buf[4]) + (b * T + t.arg[0]) * 2;
    part[0] = best;
    std::memcpy(&part[1], &best_i, 4);
  }
}

void step(const TaskContext& c, const TaskDesc& t) {
  const auto& h = c.p->h;
  const int b = t.b0;
  const int64_t V = h.vocab, H = h.hidden;
  SeqState& s = c.as<SeqState>(t.buf[4])[b];
  if (s.done) return;
  float* logits = c.as<float>(t.buf[0]) + b * V;
  if (c.hooks && c.hooks->capture) c.hooks->capture(b, logits);
  const Control& ctl = *c.as<Control>(t.buf[7]);
  if (__atomic_load_n(&ctl.stop_request, __ATOMIC_RELAXED)) {  // the host writes it asynchronously
    s.done = 1;
    s.stop_reason = int32_t(StopReason::Stopped);
    return;
  }
  int32_t* tokens = c.as<int32_t>(t.buf[5]) + int64_t(b) * h.max_context;
  int32_t next;
  if (s.pos + 1 < s.prompt_len) {
    next = tokens[s.pos + 1];
  } else {
    if (program::context_full(s.pos + 1, h.max_context)) {  // a prompt of max_context tokens: nothing to emit
      s.done = 1;
      s.stop_reason = int32_t(StopReason::Context);
      return;
    }
    if (s.temperature <= 0 && s.repetition_penalty == 1.0f) {
      const float* part = c.as<float>(t.buf[1]) + int64_t(b) * t.arg[0] * 2;
      float best = -INFINITY;
      next = 0;
      bool any = false;
      for (int tile = 0; tile < t.arg[0]; ++tile) {
        int32_t idx;
        std::memcpy(&idx, &part[tile * 2 + 1], 4);
        if (!any || part[tile * 2] > best || (part[tile * 2] == best && idx < next)) {
          best = part[tile * 2];
          next = idx;
          any = true;
        }
      }
    } else {
      const program::SamplingParams sp = program::sampling_of(s);
      next = program::sample_token(logits, V, tokens, s.pos + 1, sp,
                                   program::rng_uniform(sp.seed, uint32_t(b), uint32_t(s.n_generated)));
    }
    int32_t* ring = c.as<int32_t>(t.buf[6]) + int64_t(b) * h.ring_len;
    ring[s.n_generated % h.ring_len] = next;
    s.n_generated++;
    if (s.pos + 1 < h.max_context) tokens[s.pos + 1] = next;
    if (c.hooks && c.hooks->on_token) c.hooks->on_token(b, next);
    const StopReason stop = program::stop_after_token(program::is_eos(ctl, next), false, s.n_generated, s.max_new,
                                                      int64_t(s.pos) + 2, h.max_context);
    if (stop != StopReason::None) {
      s.done = 1;
      s.stop_reason = int32_t(stop);
      return;
    }
  }
  KEEL_CHECK(next >= 0 && next < V, "cpu executor: token ", next, " out of the vocabulary");
  s.pos++;
  s.token = next;
  float* x = c.as<float>(t.buf[3]) + b * H;
  for (int64_t i = 0; i < H; ++i) x[i] = load(c, t.buf[2], size_t(next) * H + i);
}

void run_task(const TaskContext& c, const TaskDesc& t) {
  switch (Opcode(t.opcode)) {
    case Opcode::QkvProj: return qkv_proj(c, t);
    case Opcode::GateUp: return gate_up(c, t);
    case Opcode::Attention: return attention(c, t);
    case Opcode::MatvecResidual: return matvec_residual(c, t);
    case Opcode::LmHead: return lm_head(c, t);
    case Opcode::Step: return step(c, t);
  }
  fail("cpu executor: unknown opcode ", t.opcode);
}

}  // namespace keel::exec::cpu
