// Device implementations of the Program's opcodes (compiler/program.h,
// kOpcodeTable), one __device__ function per opcode, named like its CPU twin in
// src/exec/cpu/tasks.cpp and rounding at the same points: bf16 normed inputs,
// raw q/k/v rows, q after its epilogue, K/V, attention output and MLP hidden;
// fp32 residual stream, accumulation, head norm, RoPE, softmax and logits;
// weights as stored (f32 / f16 / bf16). A task runs on one whole CTA of
// kThreads threads; it reads only its TaskDesc (copied to shared memory by the
// caller) and the buffers it names through DevProgram::ptr. The only
// differences from the CPU are summation order and libm ulps.
//
// Structure kept ready for a loader warp (DESIGN invariant 6): every matvec
// reads its weight rows through warp_dot(), the one place a shared-memory
// weight ring (primitives.cuh Ring) would be consumed instead of global loads.
#pragma once

#include <cstdint>

#include "compiler/program.h"
#include "core/dtype.h"
#include "exec/cuda/primitives.cuh"
#include "exec/cuda/program_kernel.h"

namespace keel::exec::cuda::prog {

using compiler::Control;
using compiler::ProgramHeader;
using compiler::SeqState;
using compiler::TaskDesc;

inline constexpr int kWarps = kThreads / 32;

/// Device twins of compiler::qkv_width / qkv_part_begin (host-only there).
__device__ __forceinline__ int64_t qkv_w(const ProgramHeader& h) {
  return (int64_t(h.n_heads) + 2 * int64_t(h.n_kv_heads)) * h.head_dim;
}
__device__ __forceinline__ int64_t qkv_begin(const ProgramHeader& h, int part) {
  return (part == 0 ? 0 : part == 1 ? int64_t(h.n_heads) : int64_t(h.n_heads) + h.n_kv_heads) * h.head_dim;
}

template <class T>
__device__ __forceinline__ T* bp(const DevProgram& P, int32_t buf) {
  return reinterpret_cast<T*>(P.ptr[buf]);
}

__device__ __forceinline__ float load_f32(const DevProgram& P, int32_t buf, int64_t i) {
  const uint8_t* p = P.ptr[buf];
  switch (DType(P.dtype[buf])) {
    case DType::F32: return reinterpret_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
  }
  return 0.0f;
}

__device__ void dev_fail(const DevProgram& P, int32_t code, int32_t task, int32_t detail) {
  if (atomicCAS(&P.status->error, 0, code) == 0) {
    P.status->task = task;
    P.status->detail = detail;
    P.status->cta = int32_t(blockIdx.x);
  }
  __threadfence();
  atomicExch(P.abort, 1u);
}

// ---- block reductions (every thread gets the result) -----------------------

__device__ float block_sum(float v, float* scratch) {
  v = dev::warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = 0;
  for (int i = 0; i < kWarps; ++i) s += scratch[i];
  return s;
}

__device__ float block_max(float v, float* scratch) {
  v = dev::warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float s = -INFINITY;
  for (int i = 0; i < kWarps; ++i) s = fmaxf(s, scratch[i]);
  return s;
}

__device__ double block_sum_d(double v, double* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double s = 0;
  for (int i = 0; i < kWarps; ++i) s += scratch[i];
  return s;
}

__device__ uint32_t block_sum_u(uint32_t v, uint32_t* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  uint32_t s = 0;
  for (int i = 0; i < kWarps; ++i) s += scratch[i];
  return s;
}

/// (value, index) is better than (bv, bi): larger value, lower index on ties; NaN never wins.
__device__ __forceinline__ bool better(float v, int32_t i, float bv, int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

/// Block argmax: the largest value, lowest index on ties; (-inf, INT32_MAX) if nothing qualifies.
__device__ void block_argmax(float& v, int32_t& i, float* fscratch, int32_t* iscratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (better(ov, oi, v, i)) v = ov, i = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) fscratch[warp] = v, iscratch[warp] = i;
  __syncthreads();
  v = -INFINITY;
  i = INT32_MAX;
  for (int w = 0; w < kWarps; ++w)
    if (better(fscratch[w], iscratch[w], v, i)) v = fscratch[w], i = iscratch[w];
}

// ---- building blocks ---------------------------------------------------------

/// One warp: fp32 dot of weight row `row` (stored dtype) over [k0, k1) with
/// the shared-memory vector v (indexed by k). Every lane gets the sum.
__device__ float warp_dot(const uint8_t* w, DType dt, int64_t row, int64_t cols, int64_t k0, int64_t k1,
                          const float* v) {
  const int lane = threadIdx.x & 31;
  float acc = 0;
  if (dt == DType::BF16 || dt == DType::F16) {
    const uint16_t* r = reinterpret_cast<const uint16_t*>(w) + row * cols;
    const bool bf = dt == DType::BF16;
    if (((k0 | k1 | cols) & 7) == 0 && (reinterpret_cast<uintptr_t>(w) & 15) == 0) {
      for (int64_t k = k0 + lane * 8; k < k1; k += 256) {
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(r + k));
        const uint32_t wd[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint16_t lo = uint16_t(wd[j] & 0xffffu), hi = uint16_t(wd[j] >> 16);
          acc += (bf ? bf16_to_f32(lo) : f16_to_f32(lo)) * v[k + 2 * j];
          acc += (bf ? bf16_to_f32(hi) : f16_to_f32(hi)) * v[k + 2 * j + 1];
        }
      }
    } else {
      for (int64_t k = k0 + lane; k < k1; k += 32) {
        const uint16_t e = __ldg(r + k);
        acc += (bf ? bf16_to_f32(e) : f16_to_f32(e)) * v[k];
      }
    }
  } else {
    const float* r = reinterpret_cast<const float*>(w) + row * cols;
    for (int64_t k = k0 + lane; k < k1; k += 32) acc += __ldg(r + k) * v[k];
  }
  return dev::warp_sum(acc);
}

/// n = bf16(x * rsqrt(mean(x^2) + eps) * w) into shared `out` (fp32 values).
__device__ void rms_norm_bf16(const DevProgram& P, const float* x, int32_t w_buf, int64_t n, float* out,
                              float* scratch) {
  float ss = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) ss += x[i] * x[i];
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / float(n) + P.h.rms_eps);
  for (int64_t i = threadIdx.x; i < n; i += kThreads) out[i] = round_bf16(x[i] * inv * load_f32(P, w_buf, i));
  __syncthreads();
}

/// q/k epilogue on one head y[hd] in shared memory (fp32): optional head
/// RMSNorm with weight norm_buf, then RoPE at pos on pairs (i, i + hd/2).
__device__ void head_epilogue(const DevProgram& P, int32_t norm_buf, int64_t pos, float* y, float* scratch) {
  const int64_t hd = P.h.head_dim, half = hd / 2;
  if (norm_buf >= 0) {
    float ss = 0;
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) ss += y[i] * y[i];
    ss = block_sum(ss, scratch);
    const float inv = 1.0f / sqrtf(ss / float(hd) + P.h.rms_eps);
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) y[i] = y[i] * inv * load_f32(P, norm_buf, i);
    __syncthreads();
  }
  const float* inv_freq = bp<const float>(P, P.h.buf_rope);
  for (int64_t i = threadIdx.x; i < half; i += kThreads) {
    const float ang = float(pos) * inv_freq[i];
    const float cs = cosf(ang), sn = sinf(ang);
    const float a = y[i], b = y[i + half];
    y[i] = a * cs - b * sn;
    y[i + half] = b * cs + a * sn;
  }
  __syncthreads();
}

/// Cache slot of (sequence b, kv head, pos); nullptr (and a device error) on a bad page.
__device__ uint16_t* kv_slot(const DevProgram& P, int32_t cache, int b, int head, int64_t pos, int32_t task) {
  const ProgramHeader& h = P.h;
  const int32_t* pt = bp<const int32_t>(P, h.buf_page_table) + int64_t(b) * h.pages_per_seq;
  const int64_t page = pt[pos / h.page_size], slot = pos % h.page_size;
  if (page < 0 || page >= h.n_pages) {
    if ((threadIdx.x & 31) == 0) dev_fail(P, kErrBadPage, task, int32_t(page));
    return nullptr;
  }
  return bp<uint16_t>(P, cache) + ((page * h.n_kv_heads + head) * h.page_size + slot) * h.head_dim;
}

// ---- the opcodes ---------------------------------------------------------------
// `smem` is the dynamic shared memory: at least max(hidden, intermediate,
// n_heads*head_dim, qkv width) + kWarps*(kMaxHeadDim+2) + 64 floats.

__device__ void qkv_proj(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, width = qkv_w(h), off = t.arg[1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const DType wdt = DType(P.dtype[t.buf[2]]);
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_bf16(P, bp<const float>(P, t.buf[0]) + b * H, t.buf[1], H, smem, scratch);
    uint16_t* out = bp<uint16_t>(P, t.buf[4]) + b * width;
    for (int64_t r = t.row0 + warp; r < t.row1; r += kWarps) {
      float y = warp_dot(P.ptr[t.buf[2]], wdt, r - off, H, 0, H, smem);
      if (t.buf[3] >= 0) y += load_f32(P, t.buf[3], r - off);
      if (lane == 0) out[r] = f32_to_bf16(y);
    }
    __syncthreads();
  }
}

__device__ void kv_append(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch) {
  const ProgramHeader& h = P.h;
  const int64_t hd = h.head_dim;
  const int b = t.b0, kvh = t.arg[0];
  const int64_t pos = bp<const SeqState>(P, t.buf[4])[b].pos;
  const uint16_t* raw = bp<const uint16_t>(P, t.buf[0]) + b * qkv_w(h);
  const uint16_t* k = raw + qkv_begin(h, 1) + kvh * hd;
  const uint16_t* v = raw + qkv_begin(h, 2) + kvh * hd;
  for (int64_t i = threadIdx.x; i < hd; i += kThreads) smem[i] = bf16_to_f32(k[i]);
  __syncthreads();
  head_epilogue(P, t.buf[1], pos, smem, scratch);
  uint16_t* kd = kv_slot(P, t.buf[2], b, kvh, pos, task);
  uint16_t* vd = kv_slot(P, t.buf[3], b, kvh, pos, task);
  if (!kd || !vd) return;
  for (int64_t i = threadIdx.x; i < hd; i += kThreads) {
    kd[i] = f32_to_bf16(smem[i]);
    vd[i] = v[i];  // already bf16: copied, not rounded twice
  }
}

__device__ void gate_up(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, I = h.intermediate;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const DType gdt = DType(P.dtype[t.buf[2]]), udt = DType(P.dtype[t.buf[3]]);
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_bf16(P, bp<const float>(P, t.buf[0]) + b * H, t.buf[1], H, smem, scratch);
    uint16_t* out = bp<uint16_t>(P, t.buf[6]) + b * I;
    for (int64_t r = t.row0 + warp; r < t.row1; r += kWarps) {
      float g = warp_dot(P.ptr[t.buf[2]], gdt, r, H, 0, H, smem);
      float u = warp_dot(P.ptr[t.buf[3]], udt, r, H, 0, H, smem);
      if (t.buf[4] >= 0) g += load_f32(P, t.buf[4], r);
      if (t.buf[5] >= 0) u += load_f32(P, t.buf[5], r);
      if (lane == 0) out[r] = f32_to_bf16(g / (1.0f + expf(-g)) * u);
    }
    __syncthreads();
  }
}

/// Split-KV attention of one (sequence, kv head, chunk). Each warp runs an
/// online softmax over positions p0 + warp, p0 + warp + kWarps, ...; the warps'
/// (o, m, l) are then merged into the chunk's unnormalised partial.
__device__ void attn_partial(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch) {
  const ProgramHeader& h = P.h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[2];
  const int b = t.b0, kvh = t.arg[0], chunk = t.arg[1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t len = int64_t(bp<const SeqState>(P, t.buf[4])[b].pos) + 1;
  const int64_t p0 = len * chunk / C, p1 = len * (chunk + 1) / C;
  const int64_t pos = len - 1;
  float* part = bp<float>(P, t.buf[3]) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  float* q = smem;                    // [hd]
  float* wo = smem + kMaxHeadDim;     // [kWarps][hd + 2]: each warp's o, m, l
  constexpr int kPer = kMaxHeadDim / 32;
  for (int64_t j = 0; j < g; ++j) {
    const uint16_t* qh = bp<const uint16_t>(P, t.buf[0]) + int64_t(b) * qkv_w(h) + (kvh * g + j) * hd;
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) q[i] = bf16_to_f32(qh[i]);
    __syncthreads();
    head_epilogue(P, t.buf[6], pos, q, scratch);
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) q[i] = round_bf16(q[i]);
    __syncthreads();
    float m = -INFINITY, l = 0, o[kPer];
#pragma unroll
    for (int e = 0; e < kPer; ++e) o[e] = 0;
    for (int64_t pp = p0 + warp; pp < p1; pp += kWarps) {
      const uint16_t* k = kv_slot(P, t.buf[1], b, kvh, pp, task);
      const uint16_t* v = kv_slot(P, t.buf[2], b, kvh, pp, task);
      if (!k || !v) break;  // recorded; the kernel stops after this task
      float d = 0;
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        const int64_t i = lane + 32 * e;
        if (i < hd) d += q[i] * bf16_to_f32(k[i]);
      }
      const float s = dev::warp_sum(d) * h.attn_scale;
      const float mn = fmaxf(m, s);
      const float c = expf(m - mn), ex = expf(s - mn);
      l = l * c + ex;
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        const int64_t i = lane + 32 * e;
        if (i < hd) o[e] = o[e] * c + ex * bf16_to_f32(v[i]);
      }
      m = mn;
    }
    float* mine = wo + warp * (hd + 2);
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int64_t i = lane + 32 * e;
      if (i < hd) mine[i] = o[e];
    }
    if (lane == 0) mine[hd] = m, mine[hd + 1] = l;
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, wo[w * (hd + 2) + hd]);
    float* dst = part + j * (hd + 2);
    for (int64_t i = threadIdx.x; i < hd + 2; i += kThreads) {
      float acc = 0, L = 0;
      for (int w = 0; w < kWarps; ++w) {
        const float* blk = wo + w * (hd + 2);
        if (blk[hd + 1] == 0.0f) continue;  // this warp saw no position
        const float sc = expf(blk[hd] - M);
        if (i < hd) acc += blk[i] * sc;
        else L += blk[hd + 1] * sc;
      }
      dst[i] = i < hd ? acc : i == hd ? M : L;
    }
    __syncthreads();
  }
}

__device__ void attn_merge(const DevProgram& P, const TaskDesc& t) {
  const ProgramHeader& h = P.h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[1];
  const int b = t.b0, kvh = t.arg[0];
  const float* part = bp<const float>(P, t.buf[0]) + (int64_t(b) * h.n_kv_heads + kvh) * C * g * (hd + 2);
  uint16_t* out = bp<uint16_t>(P, t.buf[1]) + int64_t(b) * h.n_heads * hd;
  for (int64_t e = threadIdx.x; e < g * hd; e += kThreads) {
    const int64_t j = e / hd, i = e % hd;
    float M = -INFINITY;
    for (int64_t ch = 0; ch < C; ++ch) M = fmaxf(M, part[(ch * g + j) * (hd + 2) + hd]);
    float o = 0, L = 0;
    for (int64_t ch = 0; ch < C; ++ch) {
      const float* blk = part + (ch * g + j) * (hd + 2);
      if (blk[hd + 1] == 0.0f) continue;  // empty chunk
      const float sc = expf(blk[hd] - M);
      L += blk[hd + 1] * sc;
      o += blk[i] * sc;
    }
    out[(kvh * g + j) * hd + i] = f32_to_bf16(o / L);
  }
}

__device__ void matvec_residual(const DevProgram& P, const TaskDesc& t, float* smem) {
  const int64_t acols = P.cols[t.buf[0]], wcols = P.cols[t.buf[1]], xcols = P.cols[t.buf[3]];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const DType wdt = DType(P.dtype[t.buf[1]]);
  const bool atomic = t.flags & compiler::kFlagAtomicAccumulate;
  for (int b = t.b0; b < t.b1; ++b) {
    const uint16_t* ab = bp<const uint16_t>(P, t.buf[0]) + b * acols;
    for (int64_t k = t.k0 + threadIdx.x; k < t.k1; k += kThreads) smem[k] = bf16_to_f32(ab[k]);
    __syncthreads();
    float* xb = bp<float>(P, t.buf[3]) + b * xcols;
    for (int64_t r = t.row0 + warp; r < t.row1; r += kWarps) {
      float acc = warp_dot(P.ptr[t.buf[1]], wdt, r, wcols, t.k0, t.k1, smem);
      if (t.buf[2] >= 0) acc += load_f32(P, t.buf[2], r);
      if (lane == 0) {
        if (atomic) atomicAdd(&xb[r], acc);
        else xb[r] += acc;
      }
    }
    __syncthreads();
  }
}

__device__ void lm_head(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, V = h.vocab, T = h.n_lm_tiles;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const DType wdt = DType(P.dtype[t.buf[2]]);
  int32_t* iscratch = reinterpret_cast<int32_t*>(scratch + 32);
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_bf16(P, bp<const float>(P, t.buf[0]) + b * H, t.buf[1], H, smem, scratch);
    float* logits = bp<float>(P, t.buf[3]) + b * V;
    float best = -INFINITY;
    int32_t best_i = INT32_MAX;
    for (int64_t r = t.row0 + warp; r < t.row1; r += kWarps) {
      const float y = warp_dot(P.ptr[t.buf[2]], wdt, r, H, 0, H, smem);
      if (lane == 0) logits[r] = y;
      if (better(y, int32_t(r), best, best_i)) best = y, best_i = int32_t(r);
    }
    block_argmax(best, best_i, scratch, iscratch);
    if (threadIdx.x == 0) {
      if (best_i == INT32_MAX) best_i = t.row0;  // every logit NaN: the CPU keeps row0 and -inf
      float* part = bp<float>(P, t.buf[4]) + (b * T + t.arg[0]) * 2;
      part[0] = best;
      part[1] = __int_as_float(best_i);
    }
    __syncthreads();
  }
}

// ---- sampling ----------------------------------------------------------------

/// Order-preserving key of a float (larger float -> larger key; -0 and +0 alike,
/// as the CPU's float compares see them).
__device__ __forceinline__ uint32_t fkey(float f) {
  const uint32_t u = __float_as_uint(f + 0.0f);  // -0 + 0 = +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ int32_t block_argmax_logits(const float* logits, int64_t V, float* scratch) {
  float bv = -INFINITY;
  int32_t bi = INT32_MAX;
  for (int64_t i = threadIdx.x; i < V; i += kThreads)
    if (better(logits[i], int32_t(i), bv, bi)) bv = logits[i], bi = int32_t(i);
  block_argmax(bv, bi, scratch, reinterpret_cast<int32_t*>(scratch + 32));
  return bi == INT32_MAX ? 0 : bi;  // the CPU starts at index 0
}

/// exec::cpu::sample_token on one CTA (see its definition for the order of the
/// transforms). Modifies logits in place like the CPU. Returns the token.
/// Top-k and top-p thresholds are found by a bitwise search over float keys
/// (32 counting passes), the draw by a block prefix sum over id ranges.
__device__ int32_t sample_token(float* logits, int64_t V, const int32_t* history, int64_t n_history,
                                const SeqState& s, float u, float* scratch) {
  __shared__ double dscratch[kWarps];
  __shared__ uint32_t uscratch[kWarps];
  __shared__ double range_sum[kThreads];
  __shared__ int32_t s_pick;
  if (s.repetition_penalty != 1.0f && n_history > 0) {
    for (int64_t i = threadIdx.x; i < n_history; i += kThreads) {
      const int32_t id = history[i];
      bool first = true;  // each distinct id once
      for (int64_t j = 0; j < i && first; ++j) first = history[j] != id;
      if (first && id >= 0 && id < V) {
        const float l = logits[id];
        logits[id] = l > 0 ? l / s.repetition_penalty : l * s.repetition_penalty;
      }
    }
    __syncthreads();
  }
  if (s.temperature <= 0) return block_argmax_logits(logits, V, scratch);
  float mx = -INFINITY;
  uint32_t n_cand = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    logits[i] /= s.temperature;
    if (logits[i] > -INFINITY) mx = fmaxf(mx, logits[i]), ++n_cand;
  }
  mx = block_max(mx, scratch);
  n_cand = block_sum_u(n_cand, uscratch);
  if (n_cand == 0 || mx == INFINITY) return block_argmax_logits(logits, V, scratch);
  auto cand = [&](int64_t i) { return logits[i] > -INFINITY; };
  // top-k: keep logits >= the k-th largest value (its key: the largest t with count(key >= t) >= k).
  uint32_t kth_key = 0;
  if (s.top_k > 0 && uint32_t(s.top_k) < n_cand) {
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t t = kth_key | (1u << bit);
      uint32_t c = 0;
      for (int64_t i = threadIdx.x; i < V; i += kThreads) c += cand(i) && fkey(logits[i]) >= t;
      if (block_sum_u(c, uscratch) >= uint32_t(s.top_k)) kth_key = t;
    }
  }
  auto alive_k = [&](int64_t i) { return cand(i) && fkey(logits[i]) >= kth_key; };
  // top-p over the top-k survivors, sorted by (value desc, id asc): the smallest prefix whose
  // probability reaches p. Its last value v* is the largest key t with mass(key >= t) >= p*total;
  // ties at v* are taken in id order.
  uint32_t p_key = 0;
  int32_t p_last = INT32_MAX;
  uint32_t n_k = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) n_k += alive_k(i);
  n_k = block_sum_u(n_k, uscratch);
  if (s.top_p < 1.0f && n_k > 1) {
    double tot = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
      if (alive_k(i)) tot += exp(double(logits[i]) - mx);
    const double total = block_sum_d(tot, dscratch);
    const double goal = double(s.top_p) * total;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t t = p_key | (1u << bit);
      double mass = 0;
      for (int64_t i = threadIdx.x; i < V; i += kThreads)
        if (alive_k(i) && fkey(logits[i]) >= t) mass += exp(double(logits[i]) - mx);
      if (block_sum_d(mass, dscratch) >= goal) p_key = t;
    }
    // mass strictly above v*, then the ties at v* in id order (one thread: ties are rare)
    double above = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
      if (alive_k(i) && fkey(logits[i]) > p_key) above += exp(double(logits[i]) - mx);
    above = block_sum_d(above, dscratch);
    if (threadIdx.x == 0) {
      double cum = above;
      int32_t last = INT32_MAX;
      for (int64_t i = 0; i < V; ++i)
        if (alive_k(i) && fkey(logits[i]) == p_key) {
          cum += exp(double(logits[i]) - mx);
          last = int32_t(i);
          if (cum >= goal) break;
        }
      s_pick = last;
    }
    __syncthreads();
    p_last = s_pick;
    __syncthreads();
  }
  const double cut = s.min_p > 0.0f ? log(double(s.min_p)) : -INFINITY;
  auto alive = [&](int64_t i) {
    if (!alive_k(i)) return false;
    if (p_last != INT32_MAX) {
      const uint32_t k = fkey(logits[i]);
      if (k < p_key || (k == p_key && i > p_last)) return false;
    }
    return !(s.min_p > 0.0f && double(logits[i]) - mx < cut);
  };
  // Draw: survivors in ascending id order with weights float(exp(l - max)).
  const int64_t per = (V + kThreads - 1) / kThreads;
  const int64_t lo = threadIdx.x * per, hi = lo + per < V ? lo + per : V;
  double mine = 0;
  int32_t last_alive = -1;
  for (int64_t i = lo; i < hi; ++i)
    if (alive(i)) mine += double(float(exp(double(logits[i]) - mx))), last_alive = int32_t(i);
  range_sum[threadIdx.x] = mine;
  if (threadIdx.x == 0) s_pick = -1;
  __syncthreads();
  if (last_alive >= 0) atomicMax(&s_pick, last_alive);  // idx.back() if the walk never stops
  __syncthreads();
  const int32_t fallback = s_pick;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int k = 0; k < kThreads; ++k) total += range_sum[k];
    const double target = double(u) * total;
    double cum = 0;
    int32_t pick = fallback;
    for (int k = 0; k < kThreads && pick == fallback; ++k) {
      if (cum + range_sum[k] <= target) {
        cum += range_sum[k];
        continue;
      }
      const int64_t a = k * per, z = a + per < V ? a + per : V;
      for (int64_t i = a; i < z; ++i)
        if (alive(i)) {
          cum += double(float(exp(double(logits[i]) - mx)));
          if (target < cum) {
            pick = int32_t(i);
            break;
          }
        }
      break;
    }
    s_pick = pick;
  }
  __syncthreads();
  const int32_t r = s_pick;
  __syncthreads();
  return r;
}

/// The Step task of sequence b0 (see kOpcodeTable and exec::cpu::step).
__device__ void step(const DevProgram& P, const TaskDesc& t, int32_t task, float* scratch) {
  const ProgramHeader& h = P.h;
  const int b = t.b0;
  const int64_t V = h.vocab, H = h.hidden;
  __shared__ int32_t s_next, s_go;
  SeqState* sp = bp<SeqState>(P, t.buf[4]) + b;
  volatile SeqState& s = *sp;
  if (s.done) return;
  float* logits = bp<float>(P, t.buf[0]) + b * V;
  const int32_t pos = s.pos;
  if (P.capture) {
    float* dst = P.capture + (int64_t(b) * h.max_context + pos) * V;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) dst[i] = logits[i];
    if (threadIdx.x == 0) P.capture_rows[b] = pos + 1;
  }
  const volatile Control& ctl = *bp<Control>(P, t.buf[7]);
  if (threadIdx.x == 0) s_go = ctl.stop_request;  // written by the host while the kernel runs
  __syncthreads();
  const bool stop = s_go != 0;
  __syncthreads();
  if (stop) {
    if (threadIdx.x == 0) {
      s.done = 1;
      s.stop_reason = int32_t(compiler::StopReason::Stopped);
    }
    return;
  }
  int32_t* tokens = bp<int32_t>(P, t.buf[5]) + int64_t(b) * h.max_context;
  if (pos + 1 < s.prompt_len) {
    if (threadIdx.x == 0) s_next = tokens[pos + 1], s_go = 1;
  } else {
    int32_t next;
    if (s.temperature <= 0 && s.repetition_penalty == 1.0f) {
      next = 0;
      if (threadIdx.x == 0) {
        const float* part = bp<const float>(P, t.buf[1]) + int64_t(b) * t.arg[0] * 2;
        float best = -INFINITY;
        bool any = false;
        for (int tile = 0; tile < t.arg[0]; ++tile) {
          const int32_t idx = __float_as_int(part[tile * 2 + 1]);
          if (!any || part[tile * 2] > best || (part[tile * 2] == best && idx < next)) {
            best = part[tile * 2];
            next = idx;
            any = true;
          }
        }
      }
    } else {
      SeqState copy;
      copy.temperature = s.temperature;
      copy.top_k = s.top_k;
      copy.top_p = s.top_p;
      copy.min_p = s.min_p;
      copy.repetition_penalty = s.repetition_penalty;
      const uint64_t seed = uint64_t(s.seed_hi) << 32 | s.seed_lo;
      const float u = compiler::rng_uniform(seed, uint32_t(b), uint32_t(s.n_generated));
      next = sample_token(logits, V, tokens, pos + 1, copy, u, scratch);
    }
    if (threadIdx.x == 0) {
      s_go = 1;
      s_next = next;
      const int32_t n = s.n_generated;
      bp<int32_t>(P, t.buf[6])[int64_t(b) * h.ring_len + n % h.ring_len] = next;
      s.n_generated = n + 1;
      if (pos + 1 < h.max_context) tokens[pos + 1] = next;
      if (P.host_ring) {  // publish to the host: the token, then the count
        P.host_ring[int64_t(b) * h.ring_len + n % h.ring_len] = next;
        __threadfence_system();
        *reinterpret_cast<volatile int32_t*>(&P.host_count[b]) = n + 1;
      }
      bool eos = false;
      for (int i = 0; i < min(ctl.n_eos, compiler::kMaxEos); ++i) eos |= ctl.eos[i] == next;
      if (eos || n + 1 >= s.max_new || pos + 1 >= h.max_context) {
        s.done = 1;
        s.stop_reason = int32_t(eos ? compiler::StopReason::Eos
                                    : n + 1 >= s.max_new ? compiler::StopReason::MaxTokens
                                                         : compiler::StopReason::Context);
        s_go = 0;
      }
    }
  }
  __syncthreads();
  const int32_t next = s_next;
  const bool go = s_go;
  __syncthreads();
  if (!go) return;
  if (next < 0 || next >= V) {
    if (threadIdx.x == 0) dev_fail(P, kErrBadToken, task, next);
    return;
  }
  if (threadIdx.x == 0) {
    s.pos = pos + 1;
    s.token = next;
  }
  float* x = bp<float>(P, t.buf[3]) + b * H;
  for (int64_t i = threadIdx.x; i < H; i += kThreads) x[i] = load_f32(P, t.buf[2], int64_t(next) * H + i);
}

/// Runs task `task` (its descriptor already in shared memory as `t`) on the whole CTA.
__device__ void run_task(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch) {
  switch (compiler::Opcode(t.opcode)) {
    case compiler::Opcode::QkvProj: return qkv_proj(P, t, smem, scratch);
    case compiler::Opcode::GateUp: return gate_up(P, t, smem, scratch);
    case compiler::Opcode::AttnPartial: return attn_partial(P, t, task, smem, scratch);
    case compiler::Opcode::AttnMerge: return attn_merge(P, t);
    case compiler::Opcode::MatvecResidual: return matvec_residual(P, t, smem);
    case compiler::Opcode::LmHead: return lm_head(P, t, smem, scratch);
    case compiler::Opcode::Step: return step(P, t, task, scratch);
    case compiler::Opcode::KvAppend: return kv_append(P, t, task, smem, scratch);
  }
  if (threadIdx.x == 0) dev_fail(P, kErrBadOpcode, task, t.opcode);
}

}  // namespace keel::exec::cuda::prog
