// Device helpers of the Attention opcode (src/ops/attention.cuh): the q/k head
// epilogue (RMSNorm, RoPE), the KV-cache slot, row loads and stores, the online
// softmax step, the K/V prefetch before the task's wait (attn_prefetch) and the
// merge of the C chunk partials by the chunk that arrives last.
#pragma once

#include "exec/cuda/program_tasks.cuh"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using AttnSlots = ops::AttentionOperands;  // Attention's operand slots

/// ldmatrix of four 8 x 8 bf16 matrices (thread i: the address of row i % 8
/// of matrix i / 8), as stored (rows) or transposed.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_rows(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
/// Two fp32 as a bf16 pair (lo in the low half), each rounded to nearest even.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t(f32_to_bf16(lo)) | (uint32_t(f32_to_bf16(hi)) << 16);
}

/// (cos, sin) of the RoPE angle pos * inv_freq, rounded like the CPU twin's
/// cosf / sinf (libm ulps apart); sincosf shares one range reduction. Out of line: the full-range sine and cosine
/// carry a large slow path, and every inlined copy of it costs instruction cache.
__device__ __noinline__ float2 rope_cs(int64_t pos, float inv_freq) {
  const float ang = float(pos) * inv_freq;
  float sn, cs;
  sincosf(ang, &sn, &cs);  // one range reduction for both
  return make_float2(cs, sn);
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
    csync();
  }
  const float* inv_freq = bp<const float>(P, P.h.buf_rope);
#pragma unroll 1
  for (int64_t i = threadIdx.x; i < half; i += kThreads) {
    const float2 r = rope_cs(pos, inv_freq[i]);
    const float cs = r.x, sn = r.y;
    const float a = y[i], b = y[i + half];
    y[i] = a * cs - b * sn;
    y[i + half] = b * cs + a * sn;
  }
  csync();
}

/// The q/k epilogue of head rows of head_dim HD in a warp's registers: lane l
/// holds elements i = l + 32 e (e < E, i < HD). The head norm's weights and
/// the RoPE frequencies are loaded once (a task's rows share them), the
/// cosines and sines once per position (rope(), shared by a lane's heads);
/// apply() norms one row and rotates it, the pairs (i, i + HD/2) in the same
/// lane (HD >= 64) or across lanes l and l ^ HD/2.
template <int HD>
struct RowEpilogue {
  static constexpr int E = (HD + 31) / 32, kHalf = HD / 2;
  float w[E], f[E], c[E], sn[E];
  bool norm;
  __device__ __forceinline__ RowEpilogue(const DevProgram& P, int32_t norm_buf, int lane) : norm(norm_buf >= 0) {
    const float* inv_freq = bp<const float>(P, P.h.buf_rope);
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int i = lane + 32 * e;
      w[e] = norm && i < HD ? load_f32(P, norm_buf, i) : 1.0f;
      f[e] = i < HD ? inv_freq[i % kHalf] : 0.0f;
    }
  }
  /// The rotation at pos (pairs share their angle: one sincos each).
  __device__ __forceinline__ void rope(int64_t pos) {
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (HD >= 64 && e >= E / 2) {
        c[e] = c[e - E / 2], sn[e] = sn[e - E / 2];
      } else {
        const float2 r = rope_cs(pos, f[e]);
        c[e] = r.x, sn[e] = r.y;
      }
    }
  }
  /// Row y (raw values, fp32) normed (eps) and rotated at the last rope() position.
  __device__ __forceinline__ void apply(float (&y)[E], float eps, int lane) const {
    if (norm) {
      float ss = 0;
#pragma unroll
      for (int e = 0; e < E; ++e) ss += lane + 32 * e < HD ? y[e] * y[e] : 0.0f;
      ss = dev::warp_sum(ss);
      const float inv = 1.0f / sqrtf(ss / float(HD) + eps);
#pragma unroll
      for (int e = 0; e < E; ++e) y[e] = y[e] * inv * w[e];
    }
    float other[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if constexpr (HD >= 64) other[e] = y[(e + E / 2) % E];
      else other[e] = __shfl_xor_sync(0xffffffffu, y[e], kHalf);
    }
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const bool lo = lane + 32 * e < kHalf;
      y[e] = lo ? y[e] * c[e] - other[e] * sn[e] : y[e] * c[e] + other[e] * sn[e];
    }
  }
};

/// Lane b's state as this step's producers left it (through L2).
__device__ __forceinline__ void lane_state(const DevProgram& P, int b, int64_t* pos, bool* done) {
  const volatile SeqState* s = reinterpret_cast<const volatile SeqState*>(bp<const SeqState>(P, P.h.buf_state)) + b;
  *pos = s->pos;
  *done = s->done != 0;
}

/// Cache slot of (sequence b, kv head, pos); nullptr (and a device error) on a bad page.
__device__ uint16_t* kv_slot(const DevProgram& P, int32_t cache, int b, int head, int64_t pos, int32_t task) {
  const ProgramHeader& h = P.h;
  const int64_t page = bp<const int32_t>(P, h.buf_page_table)[program::kv_page_entry(h, b, pos)];
  if (page < 0 || page >= h.n_pages) {
    if ((threadIdx.x & 31) == 0) dev_fail(P, kErrBadPage, task, int32_t(page));
    return nullptr;
  }
  return bp<uint16_t>(P, cache) + kv_offset(h, page, head, pos, 0);
}


/// KP contiguous bf16 of a K/V row (lane l holds elements [l*KP, (l+1)*KP)),
/// through L2 (the cache is written by other SMs).
template <int KP>
__device__ __forceinline__ void load_row(const uint16_t* p, float (&x)[KP]) {
  if constexpr (KP == 8) {
    const uint4 v = __ldcg(reinterpret_cast<const uint4*>(p));
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) x[2 * i] = bits_f32(w[i] << 16), x[2 * i + 1] = bits_f32(w[i] & 0xffff0000u);
  } else if constexpr (KP == 4) {
    const uint2 v = __ldcg(reinterpret_cast<const uint2*>(p));
    x[0] = bits_f32(v.x << 16), x[1] = bits_f32(v.x & 0xffff0000u);
    x[2] = bits_f32(v.y << 16), x[3] = bits_f32(v.y & 0xffff0000u);
  } else if constexpr (KP == 2) {
    const uint32_t v = __ldcg(reinterpret_cast<const unsigned int*>(p));
    x[0] = bits_f32(v << 16), x[1] = bits_f32(v & 0xffff0000u);
  } else {
    x[0] = bf16_to_f32(__ldcg(reinterpret_cast<const unsigned short*>(p)));
  }
}

/// One position of an online softmax: score s, value row v (this lane's KP elements).
template <int KP>
__device__ __forceinline__ void online_softmax_step(float s, const float (&v)[KP], float& m, float& l,
                                                    float (&o)[KP]) {
  const float mn = fmaxf(m, s);
  const float c = expf(m - mn), ex = expf(s - mn);
  l = l * c + ex;
#pragma unroll
  for (int e = 0; e < KP; ++e) o[e] = o[e] * c + ex * v[e];
  m = mn;
}

/// The chunk's unnormalised partial of g heads, [g][hd + 2] = (o, m, l), from
/// the warps' online-softmax states wo[NW][g][hd + 2] (a warp that saw no
/// position has l = 0 and is skipped). kOut: the task is its (sequence, kv
/// head)'s only chunk (C = 1), and also writes its g heads' output, divided by
/// their sums into bf16 out[g][hd] as merge_chunks would (with one chunk its
/// scale is exp(0) = 1, so the output is the same to the bit), without the
/// arrival count and the partial's read back through L2 (two round trips a
/// task, each behind the SM's weight copies in flight; batches of 16 and more
/// on 132 workers run one chunk a sequence and kv head).
template <bool kOut = false, int NW = kWarps>
__device__ void merge_warp_partials(const float* wo, int g, int hd, float* part, uint16_t* out = nullptr) {
  for (int k = threadIdx.x; k < g * (hd + 2); k += kThreads) {
    const int j = k / (hd + 2), i = k % (hd + 2);
    float M = -INFINITY;
    for (int w = 0; w < NW; ++w) M = fmaxf(M, wo[(w * g + j) * (hd + 2) + hd]);
    float acc = 0, L = 0;
    for (int w = 0; w < NW; ++w) {
      const float* blk = wo + (w * g + j) * (hd + 2);
      if (blk[hd + 1] == 0.0f) continue;
      const float sc = expf(blk[hd] - M);
      if (i < hd) {
        acc += blk[i] * sc;
        if constexpr (kOut) L += blk[hd + 1] * sc;  // (the same sum as element hd + 1's)
      } else {
        L += blk[hd + 1] * sc;
      }
    }
    part[k] = i < hd ? acc : i == hd ? M : L;
    if constexpr (kOut)
      if (i < hd) out[j * hd + i] = f32_to_bf16(acc / L);
  }
}

template <int KP>
__device__ __forceinline__ void load_row_smem(const uint16_t* p, float (&x)[KP]) {
#pragma unroll
  for (int e = 0; e < KP; ++e) x[e] = bf16_to_f32(p[e]);
}

/// Where attention_fast keeps its scratch in the work area: q [g][hd] (fp32),
/// the position, the K and V rows of pos when the chunk appends them ([2][hd]
/// bf16), then the K/V rows of the positions it prefetched before its wait
/// ([n][2][hd] bf16); the warps' partials [kWarps][g][hd + 2] later take the
/// place of both.
struct AttnSmem {
  int64_t p0, p1, pos;
  int n_pf;           // positions [p0, p0 + n_pf) are in kv (all < pos: written in earlier steps)
  uint16_t* cur;      // K and V rows of pos (the appending chunk)
  uint16_t* kv;
};


/// from_smem: take pos from what attn_prefetch stored (it ran before the wait,
/// in the same step) instead of another L2 round trip.
__device__ __forceinline__ AttnSmem attn_smem(const DevProgram& P, const TaskDesc& t, float* smem, const RingView& R,
                                              bool from_smem) {
  const ProgramHeader& h = P.h;
  const int64_t hd = h.head_dim;
  AttnSmem a;
  const int64_t kv_off = ops::attn_kv_offset(h);
  int64_t* stash = reinterpret_cast<int64_t*>(reinterpret_cast<char*>(smem) + kv_off - 16);
  const int64_t len = (from_smem ? *stash : seq_pos(P, R, t.b0)) + 1;
  a.pos = len - 1;
  ops::attention_positions(h, t, a.pos, &a.p0, &a.p1, kMm);  // (batch-1 Programs have no minimum chunk)
  a.cur = reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(smem) + kv_off);
  a.kv = a.cur + 2 * hd;
  const int64_t room = ops::attn_prefetch_room(int64_t(P.work_bytes), kv_off, hd);
  // Positions of earlier steps only: in a prefill Program the other lanes of
  // the sequence append [step_first_pos, pos) during this step.
  const int64_t want = min(a.p1, kMm ? program::step_first_pos(h, t.b0, a.pos) : a.pos) - a.p0;
  int64_t n = want < room ? want : room;
#if KEEL_ATTN_STREAM
  // The long-context variants take every earlier position in blocks of 8 from
  // the cache (attn_stream), so nothing is prefetched for the shapes it
  // serves: the one-position loop over prefetched rows cost more than the
  // latency the prefetch hid (H200, batch 64 at context 512: ~49 -> ~40 us an
  // attention task; docs/cuda-executor.md, Attention).
  if (h.page_size % 8 == 0 && (hd == 32 || hd == 64 || hd == 128) && h.n_heads / h.n_kv_heads <= 8) n = 0;
#endif
  a.n_pf = n > 0 ? int(n) : 0;
  return a;
}

/// Before the attention task's wait (all compute threads): copies the K and V
/// rows of its chunk's positions below pos, written in earlier steps, into
/// shared memory with cp.async, so their latency overlaps the wait.
__device__ void attn_prefetch(const DevProgram& P, const TaskDesc& t, float* smem, const RingView& R) {
  const ProgramHeader& h = P.h;
  if (P.work_bytes == 0 || t.b1 - t.b0 != 1 || h.head_dim % 32 != 0) return;
  const AttnSmem a = attn_smem(P, t, smem, R, false);
  if (threadIdx.x == 0) reinterpret_cast<int64_t*>(reinterpret_cast<char*>(smem) + ops::attn_kv_offset(h) - 16)[0] = a.pos;
  const int hd = h.head_dim, vecs = hd * 2 / 16, kvh = t.arg[AttnSlots::kKvHead];
  const uint16_t* kcache = bp<const uint16_t>(P, t.buf[AttnSlots::kKCache]);
  const uint16_t* vcache = bp<const uint16_t>(P, t.buf[AttnSlots::kVCache]);
  for (int idx = int(threadIdx.x) - kPrefetchFirst; threadIdx.x >= kPrefetchFirst && idx < a.n_pf * 2 * vecs;
       idx += kThreads - kPrefetchFirst) {
    const int row = idx / (2 * vecs), which = (idx / vecs) & 1, v = idx % vecs;
    const int64_t p = a.p0 + row;
    const int64_t page = page_of(P, R, t.b0, p);
    if (page < 0 || page >= h.n_pages) continue;  // the task reports it
    const uint16_t* src = (which ? vcache : kcache) + kv_offset(h, page, kvh, p, v * 8);
    uint16_t* dst = a.kv + (int64_t(row) * 2 + which) * hd + v * 8;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(dst)), "l"(src) : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}

/// Stores a lane's KP fp32 values as bf16 at p (16/8/4/2-byte stores).
template <int KP>
__device__ __forceinline__ void store_row_bf16(uint16_t* p, const float (&x)[KP]) {
  uint32_t w[(KP + 1) / 2];
#pragma unroll
  for (int i = 0; i < KP / 2; ++i) w[i] = uint32_t(f32_to_bf16(x[2 * i])) | uint32_t(f32_to_bf16(x[2 * i + 1])) << 16;
  if constexpr (KP == 8) *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  else if constexpr (KP == 4) *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  else if constexpr (KP == 2) *reinterpret_cast<uint32_t*>(p) = w[0];
  else *p = f32_to_bf16(x[0]);
}

/// The merge, run by the chunk that arrived last: the C partials of each of the
/// g heads (log-sum-exp in chunk order, like the CPU twin) into bf16 attn. The
/// partials come through L2 (other SMs wrote them); `smem` holds the per-(chunk,
/// head) maxima and sums, then the scale factors.
__device__ void merge_chunks(const DevProgram& P, const TaskDesc& t, float* smem) {
  const ProgramHeader& h = P.h;
  const int hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[AttnSlots::kNChunks], b = t.b0, kvh = t.arg[AttnSlots::kKvHead];
  const float* part = bp<const float>(P, t.buf[AttnSlots::kPartial]) + (int64_t(b) * h.n_kv_heads + kvh) * C * g * (hd + 2);
  uint16_t* out = bp<uint16_t>(P, t.buf[AttnSlots::kOut]) + int64_t(b) * h.n_heads * hd + int64_t(kvh) * g * hd;
  float* ms = smem;           // [C][g] maxima, then scale factors (0 for an empty chunk)
  float* ls = smem + C * g;   // [C][g] sums of exp
  float* Ls = ls + C * g;     // [g] the heads' totals
  for (int k = threadIdx.x; k < C * g; k += kThreads) {
    const float2 ml = __ldcg(reinterpret_cast<const float2*>(part + int64_t(k) * (hd + 2) + hd));
    ms[k] = ml.x;
    ls[k] = ml.y;
  }
  csync();
  for (int j = threadIdx.x; j < g; j += kThreads) {
    float M = -INFINITY;
    for (int ch = 0; ch < C; ++ch) M = fmaxf(M, ms[ch * g + j]);
    float L = 0;
    for (int ch = 0; ch < C; ++ch) {
      const float l = ls[ch * g + j];
      const float sc = l == 0.0f ? 0.0f : expf(ms[ch * g + j] - M);  // an empty chunk adds nothing
      if (l != 0.0f) L += l * sc;
      ms[ch * g + j] = sc;
    }
    Ls[j] = L;
  }
  csync();
  for (int e = threadIdx.x; e < g * hd; e += kThreads) {
    const int j = e / hd, i = e % hd;
    float o = 0;
#pragma unroll 8
    for (int ch = 0; ch < C; ++ch) o += __ldcg(part + int64_t(ch * g + j) * (hd + 2) + i) * ms[ch * g + j];
    out[e] = f32_to_bf16(o / Ls[j]);
  }
}

/// After the chunk's partial is stored (every compute thread): adds 1 to the
/// arrival counter (acq_rel: releases this CTA's partial, which the barrier
/// before it ordered, and acquires the others'); the chunk that completes this
/// step's C adds merges. `flag` is a word of shared memory.
__device__ __forceinline__ void arrive_and_merge(const DevProgram& P, const TaskDesc& t, float* smem, float* flag) {
  csync();
  if (threadIdx.x == 0) {
    const uint32_t old = dev::atom_add_acq_rel(P.counters + t.arg[AttnSlots::kArrival], 1);
    *flag = (old + 1) % uint32_t(t.arg[AttnSlots::kNChunks]) == 0 ? 1.0f : 0.0f;
  }
  csync();
  if (*flag != 0.0f) merge_chunks(P, t, smem);
}

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
