// Attention's device bodies (see attention.h): attention_fast (q of the group
// in registers, one instantiation per head_dim / group size) and the generic
// attention for any head_dim <= kMaxHeadDim; run() picks one. Before its wait,
// for the shapes attention_fast serves: the K/V rows of earlier positions into
// shared memory (attn_prefetch). Helpers: exec/cuda/attention_common.cuh.
#pragma once

#include "exec/cuda/attention_common.cuh"
#include "ops/attention.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

/// The Attention opcode for head_dim = 32 * KP and at most kMaxGroup q heads
/// per kv head. Warp j < g runs head j's q epilogue (norm by a warp reduction,
/// RoPE pairs (i, i + hd/2) across lanes l and l ^ 16); in the chunk that covers
/// pos, warp g (warp 0 when g fills the CTA) also runs the k epilogue and
/// appends k and v to the cache, keeping both rows in shared memory for its own
/// use. Then every warp takes positions p0 + warp, p0 + warp + kWarps, ... one
/// per pass (the smallest loop measured fastest: the loop runs a few times per
/// task, so its code size matters more than its ILP), reads each K and V row once
/// for all g heads (q in registers) and keeps an online softmax per head; the warps' (o, m, l) are merged into the
/// chunk's partial; the last chunk to arrive merges the C partials. Same
/// roundings as the generic version (q and k rounded to bf16 after their
/// epilogues; fp32 softmax). kExact: g == kMaxGroup, so no head needs a
/// run-time guard (a guarded shuffle is a convergence region of its own).
template <int KP, int kMaxGroup, bool kExact>
__device__ void attention_fast(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch,
                               RingView& R) {
  const ProgramHeader& h = P.h;
  constexpr int hd = 32 * KP, half = hd / 2;
  const int g = h.n_heads / h.n_kv_heads, C = t.arg[AttnSlots::kNChunks];
  const int b = t.b0, kvh = t.arg[AttnSlots::kKvHead], chunk = t.arg[AttnSlots::kChunk];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // The same positions attn_prefetch copied (it ran before the wait whenever there is a work area).
  const AttnSmem A = attn_smem(P, t, smem, R, P.work_bytes > 0);
  const int64_t p0 = A.p0, p1 = A.p1, pos = A.pos, pf_end = A.p0 + A.n_pf;
  const bool appends = p0 <= pos && pos < p1;
  float* qs = smem;                               // [g][hd]
  float* wo = reinterpret_cast<float*>(A.cur);    // [kWarps][g][hd + 2], after the position loop
  const float* inv_freq = bp<const float>(P, h.buf_rope);
  const uint16_t* raw = bp<const uint16_t>(P, t.buf[AttnSlots::kQkv]) + int64_t(b) * qkv_w(h);
  // Head norm (weight norm_buf, if any) and RoPE at pos of a lane's KP elements of one head.
  auto epilogue = [&](float (&y)[KP], int32_t norm_buf) {
    if (norm_buf >= 0) {
      float ss = 0;
#pragma unroll
      for (int e = 0; e < KP; ++e) ss += y[e] * y[e];
      ss = dev::warp_sum(ss);
      const float inv = 1.0f / sqrtf(ss / float(hd) + h.rms_eps);
#pragma unroll
      for (int e = 0; e < KP; ++e) y[e] = y[e] * inv * load_f32(P, norm_buf, lane * KP + e);
    }
#pragma unroll
    for (int e = 0; e < KP; ++e) {
      const int i = lane * KP + e;
      const float other = __shfl_xor_sync(0xffffffffu, y[e], 16);  // element i +- hd/2
      const float2 rc = rope_cs(pos, inv_freq[i < half ? i : i - half]);
      const float cs = rc.x, sn = rc.y;
      y[e] = i < half ? y[e] * cs - other * sn : y[e] * cs + other * sn;
    }
  };
  // ---- q epilogue, one warp per head (while the K/V prefetch may still land) ----
  if (warp < g) {
    float y[KP];
    load_row<KP>(raw + (int64_t(kvh) * g + warp) * hd + lane * KP, y);
    epilogue(y, t.buf[AttnSlots::kQNorm]);
#pragma unroll
    for (int e = 0; e < KP; ++e) qs[warp * hd + lane * KP + e] = round_bf16(y[e]);
  }
  // ---- k epilogue and KV append at pos (the chunk that covers it) ----
  if (appends && warp == (g < kWarps ? g : 0)) {
    float y[KP], v[KP];
    load_row<KP>(raw + qkv_begin(h, 1) + int64_t(kvh) * hd + lane * KP, y);
    load_row<KP>(raw + qkv_begin(h, 2) + int64_t(kvh) * hd + lane * KP, v);  // bf16 values: stored back exactly
    epilogue(y, t.buf[AttnSlots::kKNorm]);
    store_row_bf16<KP>(A.cur + lane * KP, y);
    store_row_bf16<KP>(A.cur + hd + lane * KP, v);
    const int64_t page = page_of(P, R, b, pos);
    if (page < 0 || page >= h.n_pages) {
      if (lane == 0) dev_fail(P, kErrBadPage, task, int32_t(page));
    } else {
      const int64_t off = kv_offset(h, page, kvh, pos, lane * KP);
      store_row_bf16<KP>(bp<uint16_t>(P, t.buf[AttnSlots::kKCache]) + off, y);
      store_row_bf16<KP>(bp<uint16_t>(P, t.buf[AttnSlots::kVCache]) + off, v);
    }
  }
  asm volatile("cp.async.wait_all;" ::: "memory");  // this thread's prefetch copies; the barrier: everyone's
  csync();
  if (threadIdx.x == 0) {
    if (R.gate) *R.gate = R.entry;                              // the loader may stream again
    if (P.trace) R.t_prep = dev::globaltimer_ns();              // trace: q (and k) epilogue done
  }
  float q[kMaxGroup][KP], m[kMaxGroup], l[kMaxGroup], o[kMaxGroup][KP];
#pragma unroll
  for (int j = 0; j < kMaxGroup; ++j) {
    m[j] = -INFINITY;
    l[j] = 0;
#pragma unroll
    for (int e = 0; e < KP; ++e) {
      q[j][e] = (kExact || j < g) ? qs[j * hd + lane * KP + e] : 0.0f;
      o[j][e] = 0;
    }
  }
  const uint16_t* kc = bp<const uint16_t>(P, t.buf[AttnSlots::kKCache]);
  const uint16_t* vc = bp<const uint16_t>(P, t.buf[AttnSlots::kVCache]);
  // K and V of position p: pos from the rows appended above, earlier prefetched
  // positions from shared memory, the rest from the cache through L2.
  auto row_off = [&](int64_t p, bool* ok) -> int64_t {
    if (p == pos || p < pf_end) return 0;
    const int64_t page = page_of(P, R, b, p);
    if (page < 0 || page >= h.n_pages) {
      *ok = false;
      if (lane == 0) dev_fail(P, kErrBadPage, task, int32_t(page));
      return 0;
    }
    return kv_offset(h, page, kvh, p, lane * KP);
  };
  auto load_kv = [&](int64_t p, int64_t off, float (&k)[KP], float (&v)[KP]) {
    if (p == pos) {
      load_row_smem<KP>(A.cur + lane * KP, k);
      load_row_smem<KP>(A.cur + hd + lane * KP, v);
    } else if (p < pf_end) {
      load_row_smem<KP>(A.kv + (p - p0) * 2 * hd + lane * KP, k);
      load_row_smem<KP>(A.kv + ((p - p0) * 2 + 1) * hd + lane * KP, v);
    } else {
      load_row<KP>(kc + off, k);
      load_row<KP>(vc + off, v);
    }
  };
  bool ok = true;
  for (int64_t pa = p0 + warp; pa < p1 && ok; pa += kWarps) {  // one position per pass
    const int64_t oa = row_off(pa, &ok);
    if (!ok) break;
    float ka[KP], va[KP];
    load_kv(pa, oa, ka, va);
    float da[kMaxGroup];
#pragma unroll
    for (int j = 0; j < kMaxGroup; ++j) {
      da[j] = 0;
      if (kExact || j < g) {
#pragma unroll
        for (int e = 0; e < KP; ++e) da[j] = fmaf(q[j][e], ka[e], da[j]);
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
#pragma unroll
      for (int j = 0; j < kMaxGroup; ++j)
        if (kExact || j < g) da[j] += __shfl_xor_sync(0xffffffffu, da[j], off);
#pragma unroll
    for (int j = 0; j < kMaxGroup; ++j)
      if (kExact || j < g) online_softmax_step<KP>(da[j] * h.attn_scale, va, m[j], l[j], o[j]);
  }
  if (P.trace && threadIdx.x == 0) R.t_first = dev::globaltimer_ns();  // trace: positions done
  csync();  // every warp is done with the K/V rows: the partials take their place
  // ---- merge the warps' partials into the chunk's ----
#pragma unroll
  for (int j = 0; j < kMaxGroup; ++j) {
    if (!kExact && j >= g) continue;
    float* mine = wo + (warp * g + j) * (hd + 2);
#pragma unroll
    for (int e = 0; e < KP; ++e) mine[lane * KP + e] = o[j][e];
    if (lane == 0) mine[hd] = m[j], mine[hd + 1] = l[j];
  }
  csync();
  float* part = bp<float>(P, t.buf[AttnSlots::kPartial]) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  merge_warp_partials(wo, g, hd, part);
  arrive_and_merge(P, t, smem, scratch);
}

/// The Attention opcode for any head_dim <= kMaxHeadDim and group size: the
/// chunk at pos appends k and v first; each warp runs an online softmax over
/// positions p0 + warp, p0 + warp + kWarps, ...; the warps' (o, m, l) are merged
/// into the chunk's unnormalised partial; the last chunk to arrive merges.
__device__ void attention(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch) {
  const ProgramHeader& h = P.h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[AttnSlots::kNChunks];
  const int b = t.b0, kvh = t.arg[AttnSlots::kKvHead], chunk = t.arg[AttnSlots::kChunk];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t pos = bp<const SeqState>(P, t.buf[AttnSlots::kState])[b].pos;
  int64_t p0 = 0, p1 = 0;
  ops::attention_positions(h, t, pos, &p0, &p1);
  const uint16_t* raw = bp<const uint16_t>(P, t.buf[AttnSlots::kQkv]) + int64_t(b) * qkv_w(h);
  if (p0 <= pos && pos < p1) {  // k epilogue, then k and v into the cache at pos
    const uint16_t* k = raw + qkv_begin(h, 1) + kvh * hd;
    const uint16_t* v = raw + qkv_begin(h, 2) + kvh * hd;
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) smem[i] = bf16_to_f32(k[i]);
    csync();
    head_epilogue(P, t.buf[AttnSlots::kKNorm], pos, smem, scratch);
    uint16_t* kd = kv_slot(P, t.buf[AttnSlots::kKCache], b, kvh, pos, task);
    uint16_t* vd = kv_slot(P, t.buf[AttnSlots::kVCache], b, kvh, pos, task);
    if (kd && vd)
      for (int64_t i = threadIdx.x; i < hd; i += kThreads) {
        kd[i] = f32_to_bf16(smem[i]);
        vd[i] = v[i];  // already bf16: copied, not rounded twice
      }
    csync();
  }
  float* part = bp<float>(P, t.buf[AttnSlots::kPartial]) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  float* q = smem;                    // [hd]
  float* wo = smem + kMaxHeadDim;     // [kWarps][hd + 2]: each warp's o, m, l
  constexpr int kPer = kMaxHeadDim / 32;
  for (int64_t j = 0; j < g; ++j) {
    const uint16_t* qh = raw + (kvh * g + j) * hd;
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) q[i] = bf16_to_f32(qh[i]);
    csync();
    head_epilogue(P, t.buf[AttnSlots::kQNorm], pos, q, scratch);
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) q[i] = round_bf16(q[i]);
    csync();
    float m = -INFINITY, l = 0, o[kPer];
#pragma unroll
    for (int e = 0; e < kPer; ++e) o[e] = 0;
    for (int64_t pp = p0 + warp; pp < p1; pp += kWarps) {
      const uint16_t* k = kv_slot(P, t.buf[AttnSlots::kKCache], b, kvh, pp, task);
      const uint16_t* v = kv_slot(P, t.buf[AttnSlots::kVCache], b, kvh, pp, task);
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
    csync();
    merge_warp_partials(wo, 1, int(hd), part + j * (hd + 2));
    csync();
  }
  arrive_and_merge(P, t, smem, scratch);
}

template <>
struct DeviceOp<ops::Attention> {
  /// Its own pre-wait work for the shapes attention_fast serves (run() picks it
  /// for the same shapes): the K/V rows of earlier positions.
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram& P) {
    const ProgramHeader& h = P.h;
    const int g = h.n_heads / h.n_kv_heads;
    return (g <= 8 && (h.head_dim == 32 || h.head_dim == 64 || h.head_dim == 128)) || (g <= 4 && h.head_dim == 256);
  }
  /// Work that does not depend on this step's producers: the K/V rows of
  /// earlier positions into shared memory.
  static __device__ __forceinline__ void pre_wait(const DevProgram& P, const TaskDesc& t, float* work, const RingView& R) {
    attn_prefetch(P, t, work, R);
  }
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                  float* scratch, RingView& R) {
    // Fast path: q of every head of the group in registers (up to 8 heads, 4 for
    // head_dim 256). Group sizes 2 / 4 / 8 (1 / 3 / 5-7: the next instantiation, with
    // run-time guards) get an exact instantiation: a guard j < g around the
    // per-position butterfly puts each shuffle in its own convergence region
    // (BSSY / BSYNC), which serialises the heads' reductions.
    const int g = P.h.n_heads / P.h.n_kv_heads, hd = P.h.head_dim;
    if (hd == 64) {
      if (g == 2) return attention_fast<2, 2, true>(P, t, task, smem, scratch, R);
      if (g == 4) return attention_fast<2, 4, true>(P, t, task, smem, scratch, R);
      if (g == 8) return attention_fast<2, 8, true>(P, t, task, smem, scratch, R);
      if (g <= 8) return attention_fast<2, 8, false>(P, t, task, smem, scratch, R);
    }
    if (hd == 128) {
      if (g == 2) return attention_fast<4, 2, true>(P, t, task, smem, scratch, R);
      if (g == 4) return attention_fast<4, 4, true>(P, t, task, smem, scratch, R);
      if (g == 8) return attention_fast<4, 8, true>(P, t, task, smem, scratch, R);
      if (g <= 8) return attention_fast<4, 8, false>(P, t, task, smem, scratch, R);
    }
    if (hd == 32 && g == 8) return attention_fast<1, 8, true>(P, t, task, smem, scratch, R);
    if (hd == 32 && g <= 8) return attention_fast<1, 8, false>(P, t, task, smem, scratch, R);
    if (hd == 256 && g == 4) return attention_fast<8, 4, true>(P, t, task, smem, scratch, R);
    if (hd == 256 && g <= 4) return attention_fast<8, 4, false>(P, t, task, smem, scratch, R);
    return attention(P, t, task, smem, scratch);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
