// Device implementations of the megakernel's tasks, one function per opcode,
// shared by the persistent kernel and the per-op / CUDA-graph ablations. All
// functions run on the CTA's 256 compute threads (warps 0..7); the weight tiles
// they consume arrive through the shared-memory ring (chunk_rows() geometry), so
// the task code never touches weight memory itself.
//
// Rounding (the CPU twins round at the same points): activations are bf16
// (normed input, q/k/v, attention output, MLP hidden), accumulation, softmax
// and the residual stream are fp32, weights are read as stored.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/dtype.h"
#include "exec/cuda/layout.h"
#include "exec/cuda/primitives.cuh"

namespace keel::exec::cuda::dev {

constexpr int kComputeThreads = 256;
constexpr int kComputeWarps = kComputeThreads / 32;
constexpr int kThreads = kComputeThreads + 32;  // + the loader warp

/// Barrier among the compute warps only (the loader warp never joins).
__device__ __forceinline__ void compute_sync() {
  asm volatile("bar.sync 1, 256;" ::: "memory");
}

__device__ __forceinline__ int wtype_size(WType t) { return t == WType::F32 ? 4 : 2; }

/// The matrix a matvec task streams and its row stride.
struct MatRef {
  const char* base;
  int ld;     // elements per stored row (padded)
  int k;      // valid elements per row
  WType wt;
};

__device__ __forceinline__ MatRef task_matrix(const DevModel& m, const DevTask& t) {
  const DevLayer* L = t.op == Op::LMHEAD ? nullptr : &m.layers[t.layer];
  switch (t.op) {
    case Op::QKV: return {static_cast<const char*>(L->wqkv), m.ldh, m.hidden, m.wtype};
    case Op::OPROJ: return {static_cast<const char*>(L->wo), m.ldq, m.n_heads * m.head_dim, m.wtype};
    case Op::GATEUP: return {static_cast<const char*>(L->wgu), m.ldh, m.hidden, m.wtype};
    case Op::DOWN: return {static_cast<const char*>(L->wd), m.ldi, m.inter, m.wtype};
    case Op::LMHEAD: return {static_cast<const char*>(m.lm_head), m.ldh, m.hidden, m.wtype};
    default: return {nullptr, 0, 0, m.wtype};
  }
}

__device__ __forceinline__ bool is_matvec(Op op) {
  return op == Op::QKV || op == Op::OPROJ || op == Op::GATEUP || op == Op::DOWN ||
         op == Op::LMHEAD;
}

/// Rows per ring stage for a matrix: the largest power of two <= 256 whose
/// rows fit in one stage. The planner guarantees >= 2.
__device__ __forceinline__ int chunk_rows(const MatRef& w, uint32_t stage_bytes) {
  uint32_t row_bytes = uint32_t(w.ld) * wtype_size(w.wt);
  uint32_t fit = stage_bytes / row_bytes;
  int cap = 1;
  while (cap * 2 <= int(fit) && cap * 2 <= 256) cap *= 2;
  return cap;
}

// ---- activation preparation -------------------------------------------------

__device__ __forceinline__ float block_sum(float v, float* red) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  v = warp_sum(v);
  compute_sync();
  if (lane == 0) red[warp] = v;
  compute_sync();
  float s = 0;
#pragma unroll
  for (int w = 0; w < kComputeWarps; ++w) s += red[w];
  return s;
}

/// act[k] = bf16(bf16(x[k] * rsqrt(mean(x^2) + eps)) * w[k]) for k < n; zero pad to ld.
/// Fast path: x is read once, 16 bytes per load, every load in flight before
/// the first use (x lives in L2, written by other SMs: a latency-bound read).
__device__ void prep_norm(const float* x, const float* w, int n, int ld, float eps,
                          uint16_t* act, float* red) {
  constexpr int kMaxVec = 8;  // float4 per thread: n <= 8192
  const int tid = threadIdx.x;
  if (n % 4 == 0 && n <= kMaxVec * 4 * kComputeThreads) {
    float4 v[kMaxVec];
    float ss = 0;
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) {
      const int q = tid + i * kComputeThreads;
      v[i] = q * 4 < n ? __ldcg(reinterpret_cast<const float4*>(x) + q) : make_float4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    ss = block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / float(n) + eps);
#pragma unroll
    for (int i = 0; i < kMaxVec; ++i) {
      const int q = tid + i * kComputeThreads;
      if (q * 4 < n) {
        const float4 g = __ldg(reinterpret_cast<const float4*>(w) + q);
        uint2 o;
        o.x = uint32_t(f32_to_bf16(round_bf16(v[i].x * r) * g.x)) |
              (uint32_t(f32_to_bf16(round_bf16(v[i].y * r) * g.y)) << 16);
        o.y = uint32_t(f32_to_bf16(round_bf16(v[i].z * r) * g.z)) |
              (uint32_t(f32_to_bf16(round_bf16(v[i].w * r) * g.w)) << 16);
        reinterpret_cast<uint2*>(act)[q] = o;
      }
    }
    for (int k = n + tid; k < ld; k += kComputeThreads) act[k] = 0;
    return;
  }
  float ss = 0;
  for (int k = tid; k < n; k += kComputeThreads) {
    float v = __ldcg(x + k);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / float(n) + eps);
  for (int k = tid; k < ld; k += kComputeThreads)
    act[k] = k < n ? f32_to_bf16(round_bf16(__ldcg(x + k) * r) * w[k]) : uint16_t(0);
}

/// Norm weights of a norm-matvec task, loaded into registers before the task's
/// input wait (they are constants), so only the x loads remain after it.
struct NormPre {
  static constexpr int kMaxVec = 8;
  float4 g[kMaxVec];
  const float* w;  // null: not a norm task
  bool fast;
};

__device__ __forceinline__ void norm_prefetch(const DevModel& m, const DevTask& t, NormPre& np) {
  np.w = nullptr;
  np.fast = false;
  if (t.op == Op::QKV) np.w = m.layers[t.layer].attn_norm;
  else if (t.op == Op::GATEUP) np.w = m.layers[t.layer].mlp_norm;
  else if (t.op == Op::LMHEAD) np.w = m.final_norm;
  const int n = m.hidden;
  np.fast = np.w && n % 4 == 0 && n <= NormPre::kMaxVec * 4 * kComputeThreads;
  if (!np.fast) return;
#pragma unroll
  for (int i = 0; i < NormPre::kMaxVec; ++i) {
    const int q = threadIdx.x + i * kComputeThreads;
    np.g[i] = q * 4 < n ? __ldg(reinterpret_cast<const float4*>(np.w) + q) : make_float4(0, 0, 0, 0);
  }
}

/// prep_norm with the weights already in registers (np.fast).
__device__ __forceinline__ void prep_norm_pre(const float* x, const NormPre& np, int n, int ld,
                                              float eps, uint16_t* act, float* red) {
  const int tid = threadIdx.x;
  float4 v[NormPre::kMaxVec];
  float ss = 0;
#pragma unroll
  for (int i = 0; i < NormPre::kMaxVec; ++i) {
    const int q = tid + i * kComputeThreads;
    v[i] = q * 4 < n ? __ldcg(reinterpret_cast<const float4*>(x) + q) : make_float4(0, 0, 0, 0);
  }
#pragma unroll
  for (int i = 0; i < NormPre::kMaxVec; ++i)
    ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / float(n) + eps);
#pragma unroll
  for (int i = 0; i < NormPre::kMaxVec; ++i) {
    const int q = tid + i * kComputeThreads;
    if (q * 4 < n) {
      const float4 g = np.g[i];
      uint2 o;
      o.x = uint32_t(f32_to_bf16(round_bf16(v[i].x * r) * g.x)) |
            (uint32_t(f32_to_bf16(round_bf16(v[i].y * r) * g.y)) << 16);
      o.y = uint32_t(f32_to_bf16(round_bf16(v[i].z * r) * g.z)) |
            (uint32_t(f32_to_bf16(round_bf16(v[i].w * r) * g.w)) << 16);
      reinterpret_cast<uint2*>(act)[q] = o;
    }
  }
  for (int k = n + tid; k < ld; k += kComputeThreads) act[k] = 0;
}

/// act[k] = src[k] (bf16) for k < n; zero pad to ld. 16-byte loads, unrolled.
__device__ void prep_copy(const uint16_t* src, int n, int ld, uint16_t* act) {
  const int tid = threadIdx.x;
  if (n % 8 == 0) {
    const int nv = n / 8;
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* a4 = reinterpret_cast<uint4*>(act);
    int q = tid;
    for (; q + 3 * kComputeThreads < nv; q += 4 * kComputeThreads) {
      const uint4 a = __ldcg(s4 + q), b = __ldcg(s4 + q + kComputeThreads),
                  c = __ldcg(s4 + q + 2 * kComputeThreads), d = __ldcg(s4 + q + 3 * kComputeThreads);
      a4[q] = a;
      a4[q + kComputeThreads] = b;
      a4[q + 2 * kComputeThreads] = c;
      a4[q + 3 * kComputeThreads] = d;
    }
    for (; q < nv; q += kComputeThreads) a4[q] = __ldcg(s4 + q);
    for (int k = n + tid; k < ld; k += kComputeThreads) act[k] = 0;
    return;
  }
  for (int k = tid; k < ld; k += kComputeThreads)
    act[k] = k < n ? __ldcg(reinterpret_cast<const unsigned short*>(src) + k) : uint16_t(0);
}

// ---- the matvec core ----------------------------------------------------------

__device__ __forceinline__ float2 bf16x2_f2(uint32_t v) {
  return make_float2(bits_f32(v << 16), bits_f32(v & 0xffff0000u));
}

__device__ __forceinline__ float dot8_bf16(uint4 w, uint4 a) {
  float2 w0 = bf16x2_f2(w.x), w1 = bf16x2_f2(w.y), w2 = bf16x2_f2(w.z), w3 = bf16x2_f2(w.w);
  float2 a0 = bf16x2_f2(a.x), a1 = bf16x2_f2(a.y), a2 = bf16x2_f2(a.z), a3 = bf16x2_f2(a.w);
  float s = w0.x * a0.x;
  s = fmaf(w0.y, a0.y, s);
  s = fmaf(w1.x, a1.x, s);
  s = fmaf(w1.y, a1.y, s);
  s = fmaf(w2.x, a2.x, s);
  s = fmaf(w2.y, a2.y, s);
  s = fmaf(w3.x, a3.x, s);
  s = fmaf(w3.y, a3.y, s);
  return s;
}

__device__ __forceinline__ float2 f16x2_f2(uint32_t v) {
  return __half22float2(*reinterpret_cast<const __half2*>(&v));
}

__device__ __forceinline__ float dot8_f16(uint4 w, uint4 a) {
  float2 w0 = f16x2_f2(w.x), w1 = f16x2_f2(w.y), w2 = f16x2_f2(w.z), w3 = f16x2_f2(w.w);
  float2 a0 = bf16x2_f2(a.x), a1 = bf16x2_f2(a.y), a2 = bf16x2_f2(a.z), a3 = bf16x2_f2(a.w);
  float s = w0.x * a0.x;
  s = fmaf(w0.y, a0.y, s);
  s = fmaf(w1.x, a1.x, s);
  s = fmaf(w1.y, a1.y, s);
  s = fmaf(w2.x, a2.x, s);
  s = fmaf(w2.y, a2.y, s);
  s = fmaf(w3.x, a3.x, s);
  s = fmaf(w3.y, a3.y, s);
  return s;
}

/// Dot products of `n` rows of a tile in shared memory with act. Threads per
/// row = 256 / cap (cap = chunk_rows); returns true in the row's leader thread
/// (sub == 0), with the row in *row_out and its sum in *sum. With several warps
/// per row and `part` set, each warp stores its share in part[row * warps_per_row
/// + w] instead and no thread returns true. Otherwise `red` holds 8
/// floats (callers alternate two buffers between consecutive tiles, so one
/// barrier per tile suffices).
__device__ __forceinline__ bool matvec_tile(const char* tile, const MatRef& w, int n, int cap,
                                            const uint16_t* act, float* red, int* row_out,
                                            float* sum, float* part) {
  const int tpr = kComputeThreads / cap;
  const int t = threadIdx.x;
  const int row = t / tpr, sub = t % tpr;
  float s = 0;
  if (row < n) {
    if (w.wt == WType::F32) {
      const float4* wr = reinterpret_cast<const float4*>(tile + size_t(row) * w.ld * 4);
      const uint2* a = reinterpret_cast<const uint2*>(act);
      for (int v = sub; v < w.ld / 4; v += tpr) {
        float4 x = wr[v];
        uint2 av = a[v];
        float2 a0 = bf16x2_f2(av.x), a1 = bf16x2_f2(av.y);
        s = fmaf(x.x, a0.x, s);
        s = fmaf(x.y, a0.y, s);
        s = fmaf(x.z, a1.x, s);
        s = fmaf(x.w, a1.y, s);
      }
    } else {
      const uint4* wr = reinterpret_cast<const uint4*>(tile + size_t(row) * w.ld * 2);
      const uint4* a = reinterpret_cast<const uint4*>(act);
      // Eight independent accumulators: with only 8 compute warps per SM, one
      // dependent FMA chain per thread leaves the FMA pipes idle (measured:
      // ~26 GB/s per SM); eight chains keep them busy.
      float c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
      const int nvec = w.ld / 8;
      if (w.wt == WType::BF16) {
#pragma unroll 2
        for (int v = sub; v < nvec; v += tpr) {
          const uint4 wv = wr[v], av = a[v];
          const float2 w0 = bf16x2_f2(wv.x), w1 = bf16x2_f2(wv.y), w2 = bf16x2_f2(wv.z), w3 = bf16x2_f2(wv.w);
          const float2 a0 = bf16x2_f2(av.x), a1 = bf16x2_f2(av.y), a2 = bf16x2_f2(av.z), a3 = bf16x2_f2(av.w);
          c0 = fmaf(w0.x, a0.x, c0);
          c1 = fmaf(w0.y, a0.y, c1);
          c2 = fmaf(w1.x, a1.x, c2);
          c3 = fmaf(w1.y, a1.y, c3);
          c4 = fmaf(w2.x, a2.x, c4);
          c5 = fmaf(w2.y, a2.y, c5);
          c6 = fmaf(w3.x, a3.x, c6);
          c7 = fmaf(w3.y, a3.y, c7);
        }
      } else {
#pragma unroll 2
        for (int v = sub; v < nvec; v += tpr) {
          const uint4 wv = wr[v], av = a[v];
          const float2 w0 = f16x2_f2(wv.x), w1 = f16x2_f2(wv.y), w2 = f16x2_f2(wv.z), w3 = f16x2_f2(wv.w);
          const float2 a0 = bf16x2_f2(av.x), a1 = bf16x2_f2(av.y), a2 = bf16x2_f2(av.z), a3 = bf16x2_f2(av.w);
          c0 = fmaf(w0.x, a0.x, c0);
          c1 = fmaf(w0.y, a0.y, c1);
          c2 = fmaf(w1.x, a1.x, c2);
          c3 = fmaf(w1.y, a1.y, c3);
          c4 = fmaf(w2.x, a2.x, c4);
          c5 = fmaf(w2.y, a2.y, c5);
          c6 = fmaf(w3.x, a3.x, c6);
          c7 = fmaf(w3.y, a3.y, c7);
        }
      }
      s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7));
    }
  }
  *row_out = row;
  if (tpr <= 32) {
    for (int o = tpr / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    *sum = s;
    return sub == 0 && row < n;
  }
  s = warp_sum(s);
  const int warp = t / 32, lane = t % 32;
  if (part) {
    // No barrier: each warp leaves its share of the row for the epilogue, which
    // adds the tpr/32 shares in a fixed order (deterministic).
    if (lane == 0 && row < n) part[row * (tpr / 32) + (sub / 32)] = s;
    return false;
  }
  if (lane == 0) red[warp] = s;
  compute_sync();
  if (sub == 0 && row < n) {
    float tot = 0;
    for (int i = 0; i < tpr / 32; ++i) tot += red[warp + i];
    *sum = tot;
    return true;
  }
  return false;
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

/// Writes a finished task's rows [row0, row1) from res[] (res[i] = row0 + i),
/// every row's global reads in flight at once.
/// Global values a matvec task's epilogue needs for row row0 + threadIdx.x,
/// loaded right after the task's input wait so the round trip overlaps the
/// weight streaming: the residual row (OPROJ / DOWN) or the bias (QKV).
__device__ __forceinline__ float epilogue_prefetch(const DevModel& m, const StepIO& io,
                                                  const DevTask& t) {
  const int i = t.row0 + threadIdx.x;
  if (threadIdx.x >= t.row1 - t.row0) return 0.0f;
  const DevLayer& L = m.layers[t.layer];
  if (t.op == Op::OPROJ || t.op == Op::DOWN) return __ldcg(io.x + i);
  if (t.op == Op::QKV && L.bqkv) return L.bqkv[i];
  return 0.0f;
}

__device__ void matvec_epilogue(const DevModel& m, const StepIO& io, const DevTask& t,
                                float* res, int wpr, float pre) {
  const DevLayer& L = m.layers[t.layer];
  const int r0 = t.row0, n = t.row1 - t.row0;
  if (wpr > 1) {  // fold the per-warp shares, in order, into res[0 .. n)
    for (int i = threadIdx.x; i < n; i += kComputeThreads) {
      float v = 0;
      for (int j = 0; j < wpr; ++j) v += res[i * wpr + j];
      res[n * wpr + i] = v;
    }
    compute_sync();
    res += n * wpr;
  }
  switch (t.op) {
    case Op::QKV:
      for (int i = threadIdx.x; i < n; i += kComputeThreads) {
        const float b = i < kComputeThreads ? pre : (L.bqkv ? L.bqkv[r0 + i] : 0.0f);
        io.qkv[r0 + i] = f32_to_bf16(res[i] + b);
      }
      break;
    case Op::OPROJ:
    case Op::DOWN: {
      const float* b = t.op == Op::OPROJ ? L.bo : L.bd;
      for (int i = threadIdx.x; i < n; i += kComputeThreads) {
        const float xi = i < kComputeThreads ? pre : __ldcg(io.x + r0 + i);
        io.x[r0 + i] = xi + res[i] + (b ? b[r0 + i] : 0.0f);
      }
      break;
    }
    case Op::GATEUP:
      for (int i = threadIdx.x; i < n / 2; i += kComputeThreads) {
        const float g = res[2 * i] + (L.bgu ? L.bgu[r0 + 2 * i] : 0.0f);
        const float u = res[2 * i + 1] + (L.bgu ? L.bgu[r0 + 2 * i + 1] : 0.0f);
        io.hbuf[(r0 >> 1) + i] = f32_to_bf16(silu(g) * u);
      }
      break;
    default: break;
  }
}

/// Reduces the per-thread LM-head bests and stores the tile's winner.
__device__ void lm_finish(const StepIO& io, const DevTask& t, float best_v, int best_i,
                          float* redv, int* redi) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
    int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (ov > best_v || (ov == best_v && oi < best_i)) {
      best_v = ov;
      best_i = oi;
    }
  }
  if (lane == 0) {
    redv[warp] = best_v;
    redi[warp] = best_i;
  }
  compute_sync();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kComputeWarps; ++w)
      if (redv[w] > best_v || (redv[w] == best_v && redi[w] < best_i)) {
        best_v = redv[w];
        best_i = redi[w];
      }
    io.lm_val[t.index] = best_v;
    io.lm_idx[t.index] = best_i;
  }
}

// ---- attention ----------------------------------------------------------------

/// Positions [lo, len) that step `pos` attends to.
__device__ __forceinline__ int attn_lo(const DevModel& m, int pos) {
  return m.sliding_window > 0 ? max(0, pos + 1 - m.sliding_window) : 0;
}

/// Shared-memory K / V sub-block buffers inside the attention scratch.
__device__ __forceinline__ void attn_kv_smem(float* sc, int gq, int hd, int sub_block, uint16_t** ks,
                                             uint16_t** vs) {
  const int gq4 = (gq + 3) & ~3;
  *ks = reinterpret_cast<uint16_t*>(sc + gq * hd + 2 * hd + gq * sub_block + 3 * gq4);
  *vs = *ks + sub_block * hd;
}

/// Before the task's input wait: loads the chunk's first sub-block of cached
/// K / V (positions < pos, written in earlier steps, so no dependency on this
/// step's QKV) into shared memory, taking one L2 round trip off the critical path.
__device__ void attention_prefetch(const DevModel& m, const DevTask& t, int pos, float* sc,
                                   int sub_block) {
  const int g = t.row0, c = t.row1, C = t.index;
  const int hd = m.head_dim, nkv = m.n_kv_heads, gq = m.n_heads / nkv;
  const int lo = attn_lo(m, pos), len = pos + 1 - lo;
  const int b = lo + int((long long)c * len / C), e = lo + int((long long)(c + 1) * len / C);
  const int n = min(sub_block, e - b);
  uint16_t *ks, *vs;
  attn_kv_smem(sc, gq, hd, sub_block, &ks, &vs);
  const size_t head_base = (size_t(t.layer) * nkv + g) * size_t(m.max_ctx) * hd;
  const int vec_per_row = hd / 8;
  for (int v = threadIdx.x; v < n * vec_per_row; v += kComputeThreads) {
    const int p = v / vec_per_row, q = v % vec_per_row;
    if (b + p == pos) continue;
    const size_t src = head_base + size_t(b + p) * hd + q * 8;
    reinterpret_cast<uint4*>(ks)[v] = __ldcg(reinterpret_cast<const uint4*>(m.k_cache + src));
    reinterpret_cast<uint4*>(vs)[v] = __ldcg(reinterpret_cast<const uint4*>(m.v_cache + src));
  }
}

/// One (kv head, chunk) of split-KV decoding attention for position `pos`.
/// Scratch (shared) must hold attn_scratch_floats() floats. The last chunk of a
/// head to finish merges all chunks into io.attn.
__device__ void attention_task(const DevModel& m, const StepIO& io, const DevTask& t, int pos,
                               float* sc, int sub_block, int* flag, bool prefetched) {
  const int g = t.row0, c = t.row1, C = t.index;
  const int hd = m.head_dim, nh = m.n_heads, nkv = m.n_kv_heads, gq = nh / nkv;
  const int qd = nh * hd, kvd = nkv * hd;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const DevLayer& L = m.layers[t.layer];
  // Scratch layout (floats): q [gq][hd], k [hd], v [hd], S [gq][sub], m/l/corr [gq] x 3,
  // then K/V sub-block as bf16 [sub][hd] x 2.
  float* qs = sc;
  float* kn = qs + gq * hd;
  float* vn = kn + hd;
  float* S = vn + hd;
  const int gq4 = (gq + 3) & ~3;  // keeps the K/V block 16-byte aligned
  float* mrun = S + gq * sub_block;
  float* lrun = mrun + gq4;
  float* corr = lrun + gq4;
  uint16_t* ks = reinterpret_cast<uint16_t*>(corr + gq4);
  uint16_t* vs = ks + sub_block * hd;

  // 1. q (gq heads), k: optional RMSNorm per head, RoPE; v as is. Warp per head.
  // Every global load of this phase (q / k / v, norm weights, inverse
  // frequencies) is issued before the first use, into registers (measured on
  // H200 with the scores / PV changes below: Qwen3-1.7B -0.7%, Llama-3.2-1B
  // +0.8%, Qwen3-8B unchanged; kept for the q/k-norm models).
  const int half = hd / 2;
  const float* qnw = L.q_norm;
  const float* knw = L.k_norm;
  const float vreg = tid < hd ? bf16_to_f32(__ldcg(reinterpret_cast<const unsigned short*>(io.qkv) +
                                                   qd + kvd + g * hd + tid))
                              : 0.0f;
  for (int hh = warp; hh <= gq; hh += kComputeWarps) {
    const bool is_k = hh == gq;
    const int off = is_k ? qd + g * hd : (g * gq + hh) * hd;
    float* dst = is_k ? kn : qs + hh * hd;
    constexpr int kPerLane = 8;  // hd <= 256
    float vv[kPerLane], nwv[kPerLane], ifr[kPerLane / 2];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      vv[i] = d < hd ? bf16_to_f32(__ldcg(reinterpret_cast<const unsigned short*>(io.qkv) + off + d))
                     : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kPerLane / 2; ++i) {
      const int d = lane + 32 * i;
      ifr[i] = d < half ? m.inv_freq[d] : 0.0f;
    }
    const float* nw = is_k ? knw : qnw;
    if (nw) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        nwv[i] = d < hd ? nw[d] : 0.0f;
      }
    }
    float ss = 0;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i)
      if (lane + 32 * i < hd) ss += vv[i] * vv[i];
    ss = warp_sum(ss);
    if (nw) {
      const float r = 1.0f / sqrtf(ss / float(hd) + m.rms_eps);
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) dst[d] = round_bf16(round_bf16(vv[i] * r) * nwv[i]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) dst[d] = vv[i];
      }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < kPerLane / 2; ++i) {
      const int d = lane + 32 * i;
      if (d < half) {
        float sn, cs;
        sincosf(float(pos) * ifr[i], &sn, &cs);
        float a = dst[d], b = dst[d + half];
        float ra = a * cs - b * sn, rb = b * cs + a * sn;
        dst[d] = round_bf16(ra);
        dst[d + half] = round_bf16(rb);
      }
    }
    __syncwarp();
  }
  if (tid < hd) vn[tid] = vreg;
  if (tid < gq) {
    mrun[tid] = -INFINITY;
    lrun[tid] = 0;
  }
  compute_sync();
  const size_t head_base = (size_t(t.layer) * nkv + g) * size_t(m.max_ctx) * hd;
  if (c == C - 1) {  // the chunk holding `pos` stores this step's k and v
    for (int d = tid; d < hd; d += kComputeThreads) {
      m.k_cache[head_base + size_t(pos) * hd + d] = f32_to_bf16(kn[d]);
      m.v_cache[head_base + size_t(pos) * hd + d] = f32_to_bf16(vn[d]);
    }
  }
  compute_sync();

  // 2. Flash-decoding over this chunk's positions, sub-block by sub-block.
  const int lo = attn_lo(m, pos), len = pos + 1 - lo;
  const int b = lo + int((long long)c * len / C), e = lo + int((long long)(c + 1) * len / C);
  const float scale = 1.0f / sqrtf(float(hd));
  constexpr int kMaxO = 8;
  float o[kMaxO];
#pragma unroll
  for (int i = 0; i < kMaxO; ++i) o[i] = 0;
  const int vec_per_row = hd / 8;
  for (int sb = b; sb < e; sb += sub_block) {
    const int n = min(sub_block, e - sb);
    if (!(prefetched && sb == b)) {
      for (int v = tid; v < n * vec_per_row; v += kComputeThreads) {
        const int p = v / vec_per_row, q = v % vec_per_row;
        if (sb + p == pos) continue;  // this step's k / v come from registers below
        const size_t src = head_base + size_t(sb + p) * hd + q * 8;
        reinterpret_cast<uint4*>(ks)[v] = __ldcg(reinterpret_cast<const uint4*>(m.k_cache + src));
        reinterpret_cast<uint4*>(vs)[v] = __ldcg(reinterpret_cast<const uint4*>(m.v_cache + src));
      }
    }
    if (pos >= sb && pos < sb + n)
      for (int d = tid; d < hd; d += kComputeThreads) {
        ks[(pos - sb) * hd + d] = f32_to_bf16(kn[d]);
        vs[(pos - sb) * hd + d] = f32_to_bf16(vn[d]);
      }
    compute_sync();
    // Scores: warp per position, all query heads of the group at once (the K row
    // is read once, the heads' butterfly sums interleave). Each sum is formed
    // exactly as one warp per (head, position) would: lane-strided over d, then
    // the xor butterfly. Small groups (gq <= 4, hd <= 128) keep q in registers
    // and take two positions per pass.
    constexpr int kKPerLane = 8;  // hd <= 256
    if (gq <= 4 && hd <= 128) {
      float qr[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int d = lane + 32 * k;
          qr[j][k] = j < gq && d < hd ? qs[j * hd + d] : 0.0f;
        }
      for (int p0 = warp; p0 < n; p0 += 2 * kComputeWarps) {
        const int p1 = p0 + kComputeWarps;
        const bool has1 = p1 < n;
        float kv0[4], kv1[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int d = lane + 32 * k;
          kv0[k] = d < hd ? bf16_to_f32(ks[p0 * hd + d]) : 0.0f;
          kv1[k] = d < hd && has1 ? bf16_to_f32(ks[p1 * hd + d]) : 0.0f;
        }
        float s0[4], s1[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float a0 = 0, a1 = 0;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const int d = lane + 32 * k;
            if (d < hd) {
              a0 += qr[j][k] * kv0[k];
              a1 += qr[j][k] * kv1[k];
            }
          }
          s0[j] = a0;
          s1[j] = a1;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            s0[j] += __shfl_xor_sync(0xffffffffu, s0[j], o);
            s1[j] += __shfl_xor_sync(0xffffffffu, s1[j], o);
          }
        }
        if (lane == 0) {
#pragma unroll
          for (int j = 0; j < 4; ++j)
            if (j < gq) {
              S[j * sub_block + p0] = s0[j] * scale;
              if (has1) S[j * sub_block + p1] = s1[j] * scale;
            }
        }
      }
    } else {
      for (int p = warp; p < n; p += kComputeWarps) {
        float kv[kKPerLane];
#pragma unroll
        for (int k = 0; k < kKPerLane; ++k) {
          const int d = lane + 32 * k;
          kv[k] = d < hd ? bf16_to_f32(ks[p * hd + d]) : 0.0f;
        }
        for (int j0 = 0; j0 < gq; j0 += 4) {
          float sj[4];
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) {
            const int j = j0 + jj;
            float a = 0;
            if (j < gq) {
#pragma unroll
              for (int k = 0; k < kKPerLane; ++k) {
                const int d = lane + 32 * k;
                if (d < hd) a += qs[j * hd + d] * kv[k];
              }
            }
            sj[jj] = a;
          }
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
            for (int jj = 0; jj < 4; ++jj) sj[jj] += __shfl_xor_sync(0xffffffffu, sj[jj], o);
          }
          if (lane == 0) {
#pragma unroll
            for (int jj = 0; jj < 4; ++jj)
              if (j0 + jj < gq) S[(j0 + jj) * sub_block + p] = sj[jj] * scale;
          }
        }
      }
    }
    compute_sync();
    for (int j = warp; j < gq; j += kComputeWarps) {
      float mx = -INFINITY;
      for (int p = lane; p < n; p += 32) mx = fmaxf(mx, S[j * sub_block + p]);
      mx = warp_max(mx);
      const float mnew = fmaxf(mrun[j], mx);
      float ls = 0;
      for (int p = lane; p < n; p += 32) {
        float pe = expf(S[j * sub_block + p] - mnew);
        S[j * sub_block + p] = pe;
        ls += pe;
      }
      ls = warp_sum(ls);
      __syncwarp();
      if (lane == 0) {
        const float cr = mrun[j] == -INFINITY ? 0.0f : expf(mrun[j] - mnew);
        corr[j] = cr;
        lrun[j] = lrun[j] * cr + ls;
        mrun[j] = mnew;
      }
    }
    compute_sync();
    if (gq * hd <= 2 * kComputeThreads) {
      // Up to two outputs per thread: both accumulation chains advance together
      // (each in the same order as below).
      const int q0 = tid, q1 = tid + kComputeThreads;
      const bool v0 = q0 < gq * hd, v1 = q1 < gq * hd;
      const int j0 = v0 ? q0 / hd : 0, d0 = v0 ? q0 % hd : 0;
      const int j1 = v1 ? q1 / hd : 0, d1 = v1 ? q1 % hd : 0;
      float a0 = o[0] * corr[j0], a1 = o[1] * corr[j1];
#pragma unroll 4
      for (int p = 0; p < n; ++p) {
        a0 = fmaf(S[j0 * sub_block + p], bf16_to_f32(vs[p * hd + d0]), a0);
        a1 = fmaf(S[j1 * sub_block + p], bf16_to_f32(vs[p * hd + d1]), a1);
      }
      if (v0) o[0] = a0;
      if (v1) o[1] = a1;
    } else {
#pragma unroll
      for (int i = 0; i < kMaxO; ++i) {
        const int q = tid + i * kComputeThreads;
        if (q < gq * hd) {
          const int j = q / hd, d = q % hd;
          float acc = o[i] * corr[j];
          for (int p = 0; p < n; ++p) acc = fmaf(S[j * sub_block + p], bf16_to_f32(vs[p * hd + d]), acc);
          o[i] = acc;
        }
      }
    }
    compute_sync();
  }
  // 3. This chunk's partial result.
#pragma unroll
  for (int i = 0; i < kMaxO; ++i) {
    const int q = tid + i * kComputeThreads;
    if (q < gq * hd) {
      const int j = q / hd, d = q % hd, h = g * gq + j;
      io.part_o[(size_t(h) * C + c) * hd + d] = o[i];
    }
  }
  if (tid < gq) {
    const int h = g * gq + tid;
    io.part_ml[(size_t(h) * C + c) * 2 + 0] = mrun[tid];
    io.part_ml[(size_t(h) * C + c) * 2 + 1] = lrun[tid];
  }
  compute_sync();
  // 4. The last chunk of this head to arrive merges.
  if (tid == 0) {
    // Release: this CTA's partials (ordered before by the barrier) become visible
    // with the count; acquire: the merger then sees every other chunk's partials.
    const uint32_t old = atom_add_acq_rel(io.arrive + g, 1u);
    *flag = ((old + 1) % uint32_t(C)) == 0;
  }
  compute_sync();
  if (*flag) {
    // Chunk weights first (one thread per (head, chunk)), then each output
    // element sums its C partials with independent loads in flight.
    float* ml = sc;               // [gq][C][2]
    float* wgt = ml + 2 * gq * C;  // [gq][C]
    float* inv_l = wgt + gq * C;  // [gq]
    for (int q = tid; q < gq * C; q += kComputeThreads) {
      const int jj = q / C, cc = q % C, h = g * gq + jj;
      ml[2 * q] = __ldcg(io.part_ml + (size_t(h) * C + cc) * 2);
      ml[2 * q + 1] = __ldcg(io.part_ml + (size_t(h) * C + cc) * 2 + 1);
    }
    compute_sync();
    if (tid < gq) {
      float M = -INFINITY;
      for (int cc = 0; cc < C; ++cc) M = fmaxf(M, ml[2 * (tid * C + cc)]);
      float l = 0;
      for (int cc = 0; cc < C; ++cc) {
        const float mc = ml[2 * (tid * C + cc)];
        const float w = mc == -INFINITY ? 0.0f : expf(mc - M);
        wgt[tid * C + cc] = w;
        l += w * ml[2 * (tid * C + cc) + 1];
      }
      inv_l[tid] = 1.0f / l;
    }
    compute_sync();
    for (int q = tid; q < gq * hd; q += kComputeThreads) {
      const int jj = q / hd, d = q % hd, h = g * gq + jj;
      const float* po = io.part_o + size_t(h) * C * hd + d;
      float acc = 0;
#pragma unroll 8
      for (int cc = 0; cc < C; ++cc) acc = fmaf(wgt[jj * C + cc], __ldcg(po + size_t(cc) * hd), acc);
      io.attn[h * hd + d] = f32_to_bf16(acc * inv_l[jj]);
    }
  }
}

// ---- the step task --------------------------------------------------------------

/// Picks the next token (prompt during prefill, else the argmax), publishes a
/// generated token to the host, applies the stop rules and loads the next
/// step's embedding into x. Run by one CTA per step.
__device__ void step_task(const DevModel& m, const StepIO& io, int pos, int* shared_tok,
                          float* redv, int* redi) {
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // Parallel argmax over the LM-head tiles' winners (lowest index on ties; NaN never wins).
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int i = tid; i < io.n_lm_tasks; i += kComputeThreads) {
    const float v = __ldcg(io.lm_val + i);
    const int ix = __ldcg(io.lm_idx + i);
    if (v > bv || (v == bv && ix < bi)) {
      bv = v;
      bi = ix;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
  if (lane == 0) {
    redv[warp] = bv;
    redi[warp] = bi;
  }
  compute_sync();
  if (tid == 0) {
    for (int w = 1; w < kComputeWarps; ++w)
      if (redv[w] > bv || (redv[w] == bv && redi[w] < bi)) {
        bv = redv[w];
        bi = redi[w];
      }
    if (bi < 0 || bi >= m.vocab) bi = 0;  // all logits NaN: keep the embedding lookup in range
    int next;
    bool stop = false;
    if (pos + 1 < io.prompt_len) {
      next = io.prompt[pos + 1];
    } else {
      next = bi;
      const int n = pos + 1 - io.prompt_len;  // index of this generated token
      if (io.tokens_out) {
        io.tokens_out[n] = next;
        __threadfence_system();
        *io.n_out = n + 1;
      }
      for (int i = 0; i < io.n_eos; ++i) stop |= io.eos[i] == next;
      stop |= n + 1 >= io.max_new;
    }
    stop |= pos + 1 >= io.end_pos;
    if (io.host_stop && *io.host_stop) stop = true;
    if (stop) *io.dev_stop = 1;
    if (io.step_ns) io.step_ns[pos - io.start_pos] = globaltimer_ns();
    if (io.cur_step) *io.cur_step = pos + 1;
    *shared_tok = next;
  }
  compute_sync();
  const int tok = *shared_tok;
  for (int k = tid; k < m.hidden; k += kComputeThreads) {
    const size_t i = size_t(tok) * m.hidden + k;
    float v;
    if (m.etype == WType::F32) v = static_cast<const float*>(m.embed)[i];
    else if (m.etype == WType::F16) v = f16_to_f32(static_cast<const uint16_t*>(m.embed)[i]);
    else v = bf16_to_f32(static_cast<const uint16_t*>(m.embed)[i]);
    io.x[k] = v;
  }
}

}  // namespace keel::exec::cuda::dev
