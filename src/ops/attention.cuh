// Attention's device bodies (see attention.h): attention_fast (q of the group
// in registers, one instantiation per head_dim / group size) and the generic
// attention for any head_dim <= kMaxHeadDim; run() picks one. Before its wait,
// for the shapes attention_fast serves: the K/V rows of earlier positions into
// shared memory (attn_prefetch). Helpers: exec/cuda/attention_common.cuh.
#pragma once

#include "exec/cuda/attention_common.cuh"
#include "ops/attention.h"
#include "program/smem_plan.h"

// KEEL_ATTN_STREAM: compile attn_stream into attention_fast (the long-context
// and batch variants of the kernel; program_kernel.h). Without it the decode
// variant's attention is the one-position loop alone, as it was tuned.
#ifndef KEEL_ATTN_STREAM
#define KEEL_ATTN_STREAM 0
#endif

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

/// What both streaming states keep of q: its A fragments (row r = head r,
/// k-step s: dims c hd/4 + 4s + {0,1} (a0) and + {2,3} (a2); rows 8..15 are
/// zero (a1, a3)) and head r's running max and sum (its quad), read from and
/// written back to the warp's partial `mine` ([g][hd + 2]: o, m, l).
template <int KP>
struct StreamQ {
  static constexpr int hd = 32 * KP, KS = hd / 16;
  uint32_t qa[KS][2];
  float ml, ll;

  __device__ __forceinline__ void load_qa(const float* qs, int g, int lane) {
    const int r = lane >> 2, c = lane & 3;
#pragma unroll
    for (int st = 0; st < KS; ++st)
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const float* q = qs + r * hd + c * (hd / 4) + 4 * st + 2 * i;
        qa[st][i] = r < g ? pack_bf16x2(q[0], q[1]) : 0u;
      }
  }

  __device__ __forceinline__ void load_ml(const float* mine, int g, int lane) {
    const int r = lane >> 2;
    ml = r < g ? mine[r * (hd + 2) + hd] : -INFINITY;
    ll = r < g ? mine[r * (hd + 2) + hd + 1] : 0.0f;
  }

  /// One online-softmax update of head r over a block from its scores s
  /// (lane (r, c): positions 2c, 2c + 1; -inf where masked): the weights p0,
  /// p1 (rounded to bf16 when kBf16P, and the sum taken from the rounded
  /// ones), the running max and sum; returns the rescale factor of the old
  /// ones. A block with no position for this head leaves the state as is.
  template <bool kBf16P>
  __device__ __forceinline__ float online_update(const float (&s)[2], float& p0, float& p1) {
    float bm = fmaxf(s[0], s[1]);
    bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, 1));
    bm = fmaxf(bm, __shfl_xor_sync(0xffffffffu, bm, 2));
    const float mn = fmaxf(ml, bm);
    auto weight = [](float x) { return kBf16P ? round_bf16(expf(x)) : expf(x); };
    p0 = mn == -INFINITY ? 0.0f : weight(s[0] - mn);
    p1 = mn == -INFINITY ? 0.0f : weight(s[1] - mn);
    const float cr = mn == -INFINITY ? 1.0f : expf(ml - mn);
    float ps = p0 + p1;
    ps += __shfl_xor_sync(0xffffffffu, ps, 1);
    ps += __shfl_xor_sync(0xffffffffu, ps, 2);
    ll = ll * cr + ps;
    ml = mn;
    return cr;
  }

  __device__ __forceinline__ void store_ml(float* mine, int g, int lane) const {
    const int r = lane >> 2, c = lane & 3;
    if (c == 0 && r < g) {
      mine[r * (hd + 2) + hd] = ml;
      mine[r * (hd + 2) + hd + 1] = ll;
    }
  }
};

/// The state of one warp's streaming pass over a chunk (attn_stream): q
/// (StreamQ) and the group's o (lane-per-element), read from and written back
/// to the warp's partial `mine`.
template <int KP, int G>
struct StreamState : StreamQ<KP> {
  static constexpr int hd = 32 * KP, KS = hd / 16, KW = hd / 8;  // k-steps; K words per lane (its quarter row)
  using StreamQ<KP>::qa;
  using StreamQ<KP>::ml;
  using StreamQ<KP>::ll;
  float o[G][KP];
  const uint16_t* kcache;  // the task's K and V caches
  const uint16_t* vcache;

  __device__ __forceinline__ StreamState(const DevProgram& P, int32_t task, const float* qs, const float* mine, int g,
                                         int lane)
      : kcache(bp<const uint16_t>(P, P.tasks[task].buf[AttnSlots::kKCache])),
        vcache(bp<const uint16_t>(P, P.tasks[task].buf[AttnSlots::kVCache])) {
    load(qs, mine, g, lane);
  }

  __device__ __forceinline__ void load(const float* qs, const float* mine, int g, int lane) {
    this->load_qa(qs, g, lane);
#pragma unroll
    for (int j = 0; j < G; ++j)
#pragma unroll
      for (int e = 0; e < KP; ++e) o[j][e] = j < g ? mine[j * (hd + 2) + lane * KP + e] : 0.0f;
    this->load_ml(mine, g, lane);
  }

  __device__ __forceinline__ void store(float* mine, int g, int lane) const {
#pragma unroll
    for (int j = 0; j < G; ++j) {
      if (j >= g) continue;
#pragma unroll
      for (int e = 0; e < KP; ++e) mine[j * (hd + 2) + lane * KP + e] = o[j][e];
    }
    this->store_ml(mine, g, lane);
  }

  /// S[16 x 8] = Q . K^T on tensor cores, K's B fragments in kw.
  __device__ __forceinline__ void scores(const uint32_t (&kw)[KW], float (&sc)[4]) const {
#pragma unroll
    for (int st = 0; st < KS; ++st) {
      const uint32_t a[4] = {qa[st][0], 0u, qa[st][1], 0u};
      dev::mma_bf16(sc, a, kw[2 * st], kw[2 * st + 1]);
    }
  }

  /// One online-softmax update of head r over the block from its scores s
  /// (lane (r, c): positions 2c, 2c + 1; -inf where masked), the weights and
  /// rescale factors through `pw`, then o *= c_j. A block with no position
  /// for this warp (a bad page) leaves the state as is.
  __device__ __forceinline__ void softmax(const float (&s)[2], float* pw, int lane) {
    const int r = lane >> 2, c = lane & 3;
    float p0, p1;
    const float cr = this->template online_update<false>(s, p0, p1);
    *reinterpret_cast<float2*>(pw + r * 8 + 2 * c) = make_float2(p0, p1);
    if (c == 0) pw[64 + r] = cr;
    __syncwarp();
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const float cj = pw[64 + j];
#pragma unroll
      for (int e = 0; e < KP; ++e) o[j][e] *= cj;
    }
  }

  /// o_j += sum_u p_ju v_u, head by head, u in order; v_of(u, v) gives row
  /// u's KP elements of this lane.
  template <class F>
  __device__ __forceinline__ void pv(const float* pw, F&& v_of) {
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const float4 pa = *reinterpret_cast<const float4*>(pw + j * 8);
      const float4 pb = *reinterpret_cast<const float4*>(pw + j * 8 + 4);
      const float pj[8] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        float v[KP];
        v_of(u, v);
#pragma unroll
        for (int e = 0; e < KP; ++e) o[j][e] = fmaf(pj[u], v[e], o[j][e]);
      }
    }
  }
};

/// Element offset in the K/V caches of (sequence b, kv head kvh, position
/// base)'s row, through the page table (the CTA's copy `pages`, or global
/// memory), or -1 with the page in bad_page when it is out of range.
__device__ __forceinline__ int64_t stream_row_offset(const DevProgram& P, const int32_t* pages, int b, int kvh,
                                                     int64_t base, int32_t& bad_page) {
  const ProgramHeader& h = P.h;
  const int32_t e = program::kv_page_entry(h, b, base);
  const int64_t page = pages ? pages[e] : __ldcg(bp<const int32_t>(P, h.buf_page_table) + e);
  if (page < 0 || page >= h.n_pages) {
    bad_page = int32_t(page);
    return -1;
  }
  return kv_offset(h, page, kvh, base, 0);
}

/// KP bf16 packed in words (2 a word; KP == 1: the low half) as fp32.
template <int KP>
__device__ __forceinline__ void unpack_bf16(const uint32_t* w, float (&v)[KP]) {
  if constexpr (KP == 1) {
    v[0] = bits_f32(w[0] << 16);
  } else {
#pragma unroll
    for (int i = 0; i < KP / 2; ++i) v[2 * i] = bits_f32(w[i] << 16), v[2 * i + 1] = bits_f32(w[i] & 0xffff0000u);
  }
}

/// The earlier positions [s0, e0) of a chunk (all < pos, written in earlier
/// steps or by the step's other prefill lanes), read from the KV cache: in the
/// long-context variants, every position but pos (nothing is prefetched there:
/// attn_smem), run by each warp after the one-position loop on its partial
/// `mine` ([g][hd + 2]: o, m, l per head, in shared memory), which it reads,
/// continues and writes back.
///
/// The one-position loop costs about 200 dependent instructions per position
/// (two divisions for the address, a 5-step shuffle reduction per head, an
/// online-softmax update per head) and, with two warps per scheduler, runs at
/// ~2 GB/s of K/V per SM. Here a warp takes blocks of 8 positions (blocks w,
/// w + kWarps, ... of the 8-aligned range; a block never straddles a page when
/// page_size % 8 == 0, so one page-table read per block):
///  * scores on tensor cores: S[16 x 8] = Q[16 x hd] . K^T (mma m16n8k16; rows
///    = the group's heads, zero past g). The reduction dimension is permuted so
///    that lane (r, c) (r = lane / 4, c = lane % 4) loads B's fragments for
///    every k-step as one contiguous run of row r (dims [c hd/4, (c+1) hd/4)):
///    16-byte loads straight from the cache, no shared memory. q's A fragments
///    use the same permutation (exact bf16 products, fp32 sums: only the order
///    differs from the CPU twin);
///  * one online-softmax update per block: lane (r, c) holds head r's scores at
///    positions 2c, 2c+1; the quad's max and sum take two shuffles each;
///  * o += p v on CUDA cores in fp32 (lane-per-element, as the one-position
///    loop), the weights through this warp's `pw` (shared memory).
/// K of the next block is loaded while this block's softmax and p v run.
template <int KP, int G>
__device__ __noinline__ bool attn_stream(const DevProgram& P, const int32_t* pages, int32_t task, int b,
                                                    int kvh, int64_t s0, int64_t e0, const float* qs, int g,
                                                    float* mine, float* pw) {
  static_assert(KP == 1 || KP == 2 || KP == 4, "attn_stream: head_dim 32, 64 or 128");
  static_assert(G <= 8 && 8 * 8 + 8 <= program::kKernelAttnStreamFloats);
  using St = StreamState<KP, G>;
  constexpr int hd = St::hd, KW = St::KW;
  const ProgramHeader& h = P.h;
  const int lane = threadIdx.x & 31, r = lane >> 2, c = lane & 3;
  St st(P, task, qs, mine, g, lane);
  const uint16_t *const kcache = st.kcache, *const vcache = st.vcache;
  int32_t bad_page = 0;  // a page out of range (never 0: a bad page is < 0 or >= n_pages)
  // Element offset of the block's first row in the caches, or -1 (bad page).
  auto block_offset = [&](int64_t base) { return stream_row_offset(P, pages, b, kvh, base, bad_page); };
  uint32_t kw[KW];  // row r of the block, dims [c hd/4, (c+1) hd/4)
  auto load_k = [&](int64_t off) {
    const uint4* src = reinterpret_cast<const uint4*>(kcache + off + int64_t(r) * hd + c * (hd / 4));
#pragma unroll
    for (int i = 0; i < KW / 4; ++i) {
      const uint4 v = __ldcg(src + i);
      kw[4 * i] = v.x, kw[4 * i + 1] = v.y, kw[4 * i + 2] = v.z, kw[4 * i + 3] = v.w;
    }
  };
  const int64_t first = s0 & ~int64_t(7), stride = int64_t(kWarps) * 8;
  int64_t base = first + int64_t(threadIdx.x >> 5) * 8;
  int64_t off = base < e0 ? block_offset(base) : -1;
  // K loads are unconditional (offset 0, a valid row, where there is no
  // block): a conditional load keeps the old fragments alive beside the new
  // ones, which made ptxas keep K in local memory in the long variants.
  load_k(off >= 0 ? off : 0);
  for (; base < e0; base += stride) {
    const int64_t next = base + stride;
    const int64_t next_off = next < e0 ? block_offset(next) : -1;
    // V rows of this block (lane-per-element), zero where the position is masked.
    uint32_t vw[8][(KP + 1) / 2];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const bool in = off >= 0 && base + u >= s0 && base + u < e0;
      const uint16_t* src = vcache + (in ? off + int64_t(u) * hd : 0) + lane * KP;
      if constexpr (KP == 4) {
        const uint2 v = in ? __ldcg(reinterpret_cast<const uint2*>(src)) : make_uint2(0, 0);
        vw[u][0] = v.x, vw[u][1] = v.y;
      } else if constexpr (KP == 2) {
        vw[u][0] = in ? __ldcg(reinterpret_cast<const unsigned int*>(src)) : 0u;
      } else {
        vw[u][0] = in ? uint32_t(__ldcg(reinterpret_cast<const unsigned short*>(src))) : 0u;
      }
    }
    // ---- scores ----
    float sc[4] = {0, 0, 0, 0};
    if (off >= 0) st.scores(kw, sc);
    load_k(next_off >= 0 ? next_off : 0);  // the next block's K while this one finishes
    float s[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t p = base + 2 * c + i;
      s[i] = off >= 0 && p >= s0 && p < e0 ? sc[i] * h.attn_scale : -INFINITY;
    }
    st.softmax(s, pw, lane);
    // ---- o = o * c_j + sum_u p_ju v_u ----
    st.pv(pw, [&](int u, float (&v)[KP]) { unpack_bf16<KP>(vw[u], v); });
    __syncwarp();  // pw is rewritten by the next block
    off = next_off;
  }
  st.store(mine, g, lane);
  if (bad_page != 0) {
    if (lane == 0) dev_fail(P, kErrBadPage, task, bad_page);
    return false;
  }
  return true;
}

/// attn_stream_smem's state: q (StreamQ), and o on
/// tensor cores as O^T = V^T P^T (mma m16n8k8: rows = dims, columns = heads):
/// tile m holds dims 16 m + r (o[m][0..1]) and 16 m + r + 8 (o[m][2..3]) of
/// heads 2c and 2c + 1 (r = lane / 4, c = lane % 4); head r's running max and
/// sum (its quad), read from and written back to the warp's partial `mine`.
template <int KP>
struct StreamStateTc : StreamQ<KP> {
  static constexpr int hd = 32 * KP, KS = hd / 16, KW = hd / 8, MT = hd / 16;
  using StreamQ<KP>::qa;
  using StreamQ<KP>::ml;
  using StreamQ<KP>::ll;
  float o[MT][4];

  /// Element (m, i) of this lane's o: head o_head in `mine`, at o_at.
  static __device__ __forceinline__ int o_head(int i, int lane) { return 2 * (lane & 3) + (i & 1); }
  static __device__ __forceinline__ int o_at(int m, int i, int lane) {
    return o_head(i, lane) * (hd + 2) + 16 * m + (lane >> 2) + 8 * (i >> 1);
  }

  __device__ __forceinline__ StreamStateTc(const float* qs, const float* mine, int g, int lane) {
    this->load_qa(qs, g, lane);
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int i = 0; i < 4; ++i) o[m][i] = o_head(i, lane) < g ? mine[o_at(m, i, lane)] : 0.0f;
    this->load_ml(mine, g, lane);
  }
  /// An empty state (o = 0, m = -inf, l = 0) with q from qs.
  __device__ __forceinline__ StreamStateTc(const float* qs, int g, int lane) {
    this->load_qa(qs, g, lane);
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int i = 0; i < 4; ++i) o[m][i] = 0.0f;
    this->ml = -INFINITY;
    this->ll = 0.0f;
  }

  __device__ __forceinline__ void store(float* mine, int g, int lane) const {
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (o_head(i, lane) < g) mine[o_at(m, i, lane)] = o[m][i];
    this->store_ml(mine, g, lane);
  }

  /// S[16 x 8] = Q . K^T on tensor cores (K's B fragments in kw, the
  /// reduction dimension permuted as StreamState's), the k-steps in two
  /// chains (half the dependent latency), summed at the end.
  __device__ __forceinline__ void scores(const uint32_t (&kw)[KW], float (&sc)[4]) const {
    float sb[4] = {0, 0, 0, 0};
#pragma unroll
    for (int st = 0; st < KS; ++st) {
      const uint32_t a[4] = {qa[st][0], 0u, qa[st][1], 0u};
      dev::mma_bf16(st % 2 ? sb : sc, a, kw[2 * st], kw[2 * st + 1]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) sc[i] += sb[i];
  }

  /// One block of 8 positions: lane (r, c) holds head r's scores s at
  /// positions 2c, 2c + 1 (-inf where masked); the online-softmax update of
  /// head r (p rounded to bf16, the sum taken from the rounded p), o rescaled
  /// per head, then o += V^T p on tensor cores, V's A fragments through
  /// ldmatrix.trans from the block's V rows at shared address `va` (row
  /// lane % 8, column 8 (lane / 8)), p as the B fragment this lane holds.
  __device__ __forceinline__ void update(const float (&s)[2], uint32_t va, int lane) {
    const int c = lane & 3;
    float p0, p1;
    const float cr = this->template online_update<true>(s, p0, p1);
    // The rescale factors of this lane's columns (heads 2c, 2c + 1: quads 2c, 2c + 1).
    const float ca = __shfl_sync(0xffffffffu, cr, 8 * c), cb = __shfl_sync(0xffffffffu, cr, 8 * c + 4);
    const uint32_t pb = pack_bf16x2(p0, p1);
#pragma unroll
    for (int m2 = 0; m2 < MT / 2; ++m2) {
      uint32_t vf[4];
      ldmatrix_x4_trans(vf, va + m2 * 64);  // dims [32 m2, 32 m2 + 32): two tiles
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        float(&d)[4] = o[2 * m2 + t];
        d[0] *= ca, d[1] *= cb, d[2] *= ca, d[3] *= cb;
        dev::mma_bf16_k8(d, vf[2 * t], vf[2 * t + 1], pb);
      }
    }
  }
};

/// attn_stream's blocks with K and V through shared memory and p v on tensor
/// cores: each warp copies its blocks' K and V rows with cp.async into its
/// part of the staging buffer `sbuf` (program::attn_stream_buf_offset:
/// kAttnStreamStages blocks, rows padded), a block ahead, and no register
/// holds bytes in flight. The cache offsets of the warp's blocks are read 32
/// blocks at a time (lane j: block w0 + j) so no page-table read waits inside
/// the loop (NS: stages, kAttnStreamStages in the kernel; the micro
/// benchmark tries others). Per block: scores as attn_stream's (K's fragments from shared
/// memory), then StreamStateTc::update (o += V^T p, m16n8k8, p in bf16: the
/// roundings of the prefill_attention tiles, where attn_stream keeps p in
/// fp32 on CUDA cores). Measured alone (bench/micro/attn_stream.cu).
///
/// kGroup (attention_group): the warp is warp wi of the nw that share the
/// positions (blocks wi, wi + nw, ...), its state starts empty, and every
/// compute warp of the CTA calls it: once each has read its q (which the
/// group keeps in the staging buffer), a barrier, then the copies.
template <int KP, int G, int NS = program::kAttnStreamStages, bool kGroup = false>
__device__ __noinline__ bool attn_stream_smem(const DevProgram& P, const int32_t* pages, int32_t task, int b, int kvh,
                                              int64_t s0, int64_t e0, const float* qs, int g, float* mine, float*,
                                              uint16_t* sbuf, int wi = 0, int nw = 1) {
  static_assert(KP == 1 || KP == 2 || KP == 4, "attn_stream_smem: head_dim 32, 64 or 128");
  static_assert(G <= 8, "attn_stream_smem: at most 8 heads (mma columns)");
  using St = StreamStateTc<KP>;
  constexpr int hd = St::hd, KW = St::KW;
  constexpr int PAD = hd + 8;                                    // K and V row stride (elements)
  constexpr int SE = int(program::attn_stream_stage_elems(hd));  // a stage: K rows, then V rows
  constexpr int CH = hd / 8;                                     // 16-byte pieces a row
  static_assert(SE == 16 * PAD);
  const ProgramHeader& h = P.h;
  const int lane = threadIdx.x & 31, r = lane >> 2, c = lane & 3;
  St st = kGroup ? St(qs, g, lane) : St(qs, mine, g, lane);
  if constexpr (kGroup) csync();  // every warp's q is in registers: the staging buffer is the copies'
  const uint16_t* const kcache = bp<const uint16_t>(P, P.tasks[task].buf[AttnSlots::kKCache]);
  const uint16_t* const vcache = bp<const uint16_t>(P, P.tasks[task].buf[AttnSlots::kVCache]);
  int32_t bad_page = 0;  // a page out of range, seen by this lane (never 0 when bad)
  const int64_t first = s0 & ~int64_t(7), stride = int64_t(kGroup ? nw : kWarps) * 8;
  const int64_t base0 = first + int64_t(kGroup ? wi : int(threadIdx.x >> 5)) * 8;
  const int nblk = base0 < e0 ? int((e0 - base0 + stride - 1) / stride) : 0;
  auto window_offset = [&](int w0) -> int64_t {  // lane j: cache offset of block w0 + j, -1: none or a bad page
    if (w0 + lane >= nblk) return -1;
    return stream_row_offset(P, pages, b, kvh, base0 + int64_t(w0 + lane) * stride, bad_page);
  };
  int64_t offw = 0;
  uint32_t okmask = 0;  // bit s: the block in stage s has a valid page
  // Block n's K and V rows into stage n % NS (V rows of masked positions and
  // of a bad page are zeroed: p = 0 there, and 0 * stale bytes could be NaN),
  // then one cp.async group (empty past the last block, so groups stay counted).
  auto issue = [&](int n) {
    if (n < nblk) {
      if ((n & 31) == 0) offw = window_offset(n);
      const int64_t off = __shfl_sync(0xffffffffu, offw, n & 31);
      const int slot = n % NS;
      uint16_t* dst = sbuf + slot * SE;
      const int64_t base = base0 + int64_t(n) * stride;
      okmask = off >= 0 ? okmask | 1u << slot : okmask & ~(1u << slot);
#pragma unroll
      for (int q = lane; q < 8 * CH; q += 32) {
        const int row = q / CH, col = q % CH;
        const bool in = off >= 0 && base + row >= s0 && base + row < e0;
        uint16_t* kd = dst + row * PAD + col * 8;
        uint16_t* vd = dst + (8 + row) * PAD + col * 8;
        if (in) {
          const int64_t src = off + row * hd + col * 8;
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(kd)), "l"(kcache + src) : "memory");
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(vd)), "l"(vcache + src) : "memory");
        } else {
          *reinterpret_cast<uint4*>(vd) = make_uint4(0, 0, 0, 0);
        }
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
#pragma unroll
  for (int d = 0; d < NS - 1; ++d) issue(d);
  const uint32_t va0 = dev::smem_addr(sbuf + (8 + (lane & 7)) * PAD + (lane >> 3) * 8);
  for (int i = 0; i < nblk; ++i) {
    issue(i + NS - 1);
    asm volatile("cp.async.wait_group %0;" ::"n"(NS - 1) : "memory");
    __syncwarp();  // block i's rows, as every lane copied them, visible to the warp
    const int slot = i % NS;
    const uint16_t* st_kv = sbuf + slot * SE;
    const bool ok = (okmask >> slot) & 1;
    const int64_t base = base0 + int64_t(i) * stride;
    // ---- scores (as attn_stream, K's fragments from shared memory) ----
    uint32_t kw[KW];
    const uint4* ksrc = reinterpret_cast<const uint4*>(st_kv + r * PAD + c * (hd / 4));
#pragma unroll
    for (int k = 0; k < KW / 4; ++k) {
      const uint4 v = ksrc[k];
      kw[4 * k] = v.x, kw[4 * k + 1] = v.y, kw[4 * k + 2] = v.z, kw[4 * k + 3] = v.w;
    }
    float sc[4] = {0, 0, 0, 0};
    st.scores(kw, sc);
    float s[2];
#pragma unroll
    for (int i2 = 0; i2 < 2; ++i2) {
      const int64_t p = base + 2 * c + i2;
      s[i2] = ok && p >= s0 && p < e0 ? sc[i2] * h.attn_scale : -INFINITY;
    }
    // ---- softmax, then o = o * c_j + V^T p on tensor cores ----
    st.update(s, va0 + uint32_t(slot * SE * 2), lane);
    __syncwarp();  // this stage is rewritten by a later block
  }
  asm volatile("cp.async.wait_all;" ::: "memory");  // (only empty groups are left)
  st.store(mine, g, lane);
  const uint32_t bad_lanes = __ballot_sync(0xffffffffu, bad_page != 0);
  if (bad_lanes) {
    const int32_t bad = __shfl_sync(0xffffffffu, bad_page, __ffs(bad_lanes) - 1);
    if (lane == 0) dev_fail(P, kErrBadPage, task, bad);
    return false;
  }
  return true;
}

/// Head norm (weight norm_buf, if any) and RoPE at pos of one head row in a
/// warp: lane l holds elements [l KP, (l + 1) KP), so the RoPE pairs (i, i +
/// hd/2) are lanes l and l ^ 16.
template <int KP>
__device__ __forceinline__ void head_row_epilogue(const DevProgram& P, float (&y)[KP], int32_t norm_buf, int64_t pos,
                                                  const float* inv_freq, int lane) {
  constexpr int hd = 32 * KP, half = hd / 2;
  if (norm_buf >= 0) {
    float ss = 0;
#pragma unroll
    for (int e = 0; e < KP; ++e) ss += y[e] * y[e];
    ss = dev::warp_sum(ss);
    const float inv = 1.0f / sqrtf(ss / float(hd) + P.h.rms_eps);
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
}

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
  auto epilogue = [&](float (&y)[KP], int32_t norm_buf) { head_row_epilogue<KP>(P, y, norm_buf, pos, inv_freq, lane); };
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
  // The long-context variants (head_dim <= 128): this loop takes pos (no
  // position is prefetched there), attn_stream the rest after it. Otherwise
  // this loop takes all.
  constexpr bool kStream = KEEL_ATTN_STREAM != 0 && KP <= 4;
  const bool stream = kStream && h.page_size % 8 == 0;
  // One position for every head of the group; false: a bad page (reported).
  auto position = [&](int64_t pa) -> bool {
    const int64_t oa = row_off(pa, &ok);
    if (!ok) return false;
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
    return true;
  };
  if (stream) {  // the prefetched positions [p0, pf_end), then pos
    const int64_t n_pf = pf_end - p0, n_loop = n_pf + (appends ? 1 : 0);
    for (int64_t i = warp; i < n_loop && ok; i += kWarps)  // one position per pass
      if (!position(i < n_pf ? p0 + i : pos)) break;
  } else {
    for (int64_t pa = p0 + warp; pa < p1 && ok; pa += kWarps)  // one position per pass
      if (!position(pa)) break;
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
  if constexpr (kStream) {
    const int64_t e0 = p1 < pos ? p1 : pos;
    if (stream && e0 > pf_end && ok) {
      __syncwarp();  // the warp's partial is in shared memory; its scratch follows every warp's
      float* pw = wo + kWarps * g * (hd + 2) + warp * program::kKernelAttnStreamFloats;
      // K/V through shared memory where the Program's work area holds the
      // staging buffer (program::attn_may_stream), else in registers.
      const int64_t sb_off = program::attn_stream_buf_offset(hd, g);
      constexpr int64_t kWarpStaging = int64_t(program::kAttnStreamStages) * program::attn_stream_stage_elems(hd);
      if (program::attn_stream_buf_end(hd, g) <= int64_t(P.work_bytes))
        ok = attn_stream_smem<KP, kMaxGroup>(
            P, R.pages, task, b, kvh, pf_end, e0, qs, g, wo + warp * g * (hd + 2), pw,
            reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(smem) + sb_off) + warp * kWarpStaging);
      else
        ok = attn_stream<KP, kMaxGroup>(P, R.pages, task, b, kvh, pf_end, e0, qs, g, wo + warp * g * (hd + 2), pw);
    }
  }
  csync();
  float* part = bp<float>(P, t.buf[AttnSlots::kPartial]) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  if (kMm && C == 1) {  // the only chunk: the output straight from the warps' states (the decode variants keep their code)
    merge_warp_partials<true>(wo, g, hd, part,
                              bp<uint16_t>(P, t.buf[AttnSlots::kOut]) + int64_t(b) * h.n_heads * hd + int64_t(kvh) * g * hd);
    return;
  }
  merge_warp_partials(wo, g, hd, part);
  arrive_and_merge(P, t, smem, scratch);
}

/// Where an Attention task over several sequences (TargetDesc::attn_seqs)
/// keeps its prep until its warps stream: the staging buffer
/// (program::attn_group_bytes).
struct GroupPrep {
  int64_t* pos;     // [8] the sequences' positions
  int64_t* page;    // [8] the page each appends to
  float* norm;      // [2][hd] q and k head norms' weights
  float2* cs;       // [n][hd / 2] RoPE (cos, sin) at each sequence's position
  float* qs;        // [n][g][hd] q after its epilogue (bf16 values)
  uint16_t* raw;    // [n][g + 2][hd] the raw q, k and v rows
  __device__ __forceinline__ GroupPrep(const ProgramHeader& h, float* smem, int n) {
    char* p = reinterpret_cast<char*>(smem) + program::attn_stream_buf_offset(h.head_dim, h.n_heads / h.n_kv_heads);
    const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads;
    pos = reinterpret_cast<int64_t*>(p);
    page = pos + 8;
    norm = reinterpret_cast<float*>(page + 8);
    cs = reinterpret_cast<float2*>(norm + 2 * hd);
    qs = reinterpret_cast<float*>(cs + n * (hd / 2));
    raw = reinterpret_cast<uint16_t*>(qs + n * g * hd);
  }
};

/// What an attention_group task can prepare before its wait (pre_wait; every
/// compute thread), none of it produced in this step: the positions (the
/// kernel's per-step copy holds the first kPosCache, the rest come through
/// L2), the pages of the appends, the head norms' weights and each sequence's
/// RoPE (cos, sin), into the staging buffer (GroupPrep).
__device__ __forceinline__ void attention_group_pre(const DevProgram& P, const TaskDesc& t, float* smem,
                                                    const RingView& R) {
  const ProgramHeader& h = P.h;
  const int n = t.b1 - t.b0, hd = int(h.head_dim), half = hd / 2;
  const GroupPrep G(h, smem, n);
  if (int(threadIdx.x) < n) {
    const int b = t.b0 + int(threadIdx.x);
    const int64_t pos = seq_pos(P, R, b);
    G.pos[threadIdx.x] = pos;
    G.page[threadIdx.x] = page_of(P, R, b, pos);
  }
  for (int i = threadIdx.x; i < 2 * hd; i += kThreads) {
    const int32_t nb = t.buf[i < hd ? AttnSlots::kQNorm : AttnSlots::kKNorm];
    G.norm[i] = nb >= 0 ? load_f32(P, nb, i % hd) : 1.0f;
  }
  const float* inv_freq = bp<const float>(P, h.buf_rope);
  for (int i = threadIdx.x; i < n * half; i += kThreads)
    G.cs[i] = rope_cs(seq_pos(P, R, t.b0 + i / half), inv_freq[i % half]);
}

/// The Attention opcode over sequences [b0, b1) of one kv head, one chunk each
/// (program::attn_group_serves; the batch kernels), for head_dim = 32 * KP:
/// the task's n sequences side by side, kWarps / attn_seqs warps each. Before
/// the wait (attention_group_pre) the threads read the positions, the pages
/// the k and v rows go to and the head norms' weights and compute each
/// sequence's RoPE (cos, sin) (rope_cs: the values head_row_epilogue
/// computes); after it one round trip brings every sequence's raw q, k and v
/// rows into shared memory (cp.async), the warps run the q and k epilogues row
/// by row from shared memory alone (head norm, RoPE, q rounded to bf16) and
/// append k and v to the cache; then each warp streams
/// its blocks of its sequence's positions, the appended one among them,
/// through attn_stream_smem (kGroup), and each sequence's warps' states merge
/// into its output (merge_warp_partials). In place of n tasks' fixed costs
/// (the wait, the q round trip after it, the pipeline's start and drain, the
/// merge) once, and pipelines n times as long.
template <int KP>
__device__ __forceinline__ void attention_group(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                RingView& R, bool pre_done) {
  const ProgramHeader& h = P.h;
  constexpr int hd = 32 * KP, half = hd / 2, CH = hd / 8;  // 16-byte pieces a row
  const int g = h.n_heads / h.n_kv_heads, kvh = t.arg[AttnSlots::kKvHead];
  const int n = t.b1 - t.b0, WS = kWarps / h.target.attn_seqs;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const GroupPrep G(h, smem, n);
  // ---- every sequence's raw q, k and v rows of this kv head: one round trip ----
  const uint16_t* qkv = bp<const uint16_t>(P, t.buf[AttnSlots::kQkv]);
  const int per = (g + 2) * CH;
  for (int i = threadIdx.x; i < n * per; i += kThreads) {
    const int s = i / per, r = i % per / CH, col = i % CH;
    const int64_t at = r < g ? (int64_t(kvh) * g + r) * hd : qkv_begin(h, r - g + 1) + int64_t(kvh) * hd;
    const uint16_t* src = qkv + int64_t(t.b0 + s) * qkv_w(h) + at + col * 8;
    uint16_t* dst = G.raw + (int64_t(s) * (g + 2) + r) * hd + col * 8;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(dst)), "l"(src) : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
  if (!pre_done) attention_group_pre(P, t, smem, R);
  asm volatile("cp.async.wait_all;" ::: "memory");
  csync();
  // ---- q epilogues (bf16 into qs), k epilogues and the appends: a row a warp ----
  uint16_t* kcache = bp<uint16_t>(P, t.buf[AttnSlots::kKCache]);
  uint16_t* vcache = bp<uint16_t>(P, t.buf[AttnSlots::kVCache]);
  for (int row = warp; row < n * (g + 1); row += kWarps) {
    const int s = row / (g + 1), r = row % (g + 1);
    const uint16_t* src = G.raw + (int64_t(s) * (g + 2) + r) * hd + lane * KP;
    float y[KP];
    load_row_smem<KP>(src, y);
    // head_row_epilogue's arithmetic, its operands from shared memory
    if (t.buf[r < g ? AttnSlots::kQNorm : AttnSlots::kKNorm] >= 0) {
      const float* nw = G.norm + (r < g ? 0 : hd) + lane * KP;
      float ss = 0;
#pragma unroll
      for (int e = 0; e < KP; ++e) ss += y[e] * y[e];
      ss = dev::warp_sum(ss);
      const float inv = 1.0f / sqrtf(ss / float(hd) + h.rms_eps);
#pragma unroll
      for (int e = 0; e < KP; ++e) y[e] = y[e] * inv * nw[e];
    }
#pragma unroll
    for (int e = 0; e < KP; ++e) {
      const int i = lane * KP + e;
      const float other = __shfl_xor_sync(0xffffffffu, y[e], 16);  // element i +- hd/2
      const float2 rc = G.cs[s * half + (i < half ? i : i - half)];
      y[e] = i < half ? y[e] * rc.x - other * rc.y : y[e] * rc.x + other * rc.y;
    }
    if (r < g) {
#pragma unroll
      for (int e = 0; e < KP; ++e) G.qs[(s * g + r) * hd + lane * KP + e] = round_bf16(y[e]);
      continue;
    }
    float v[KP];
    load_row_smem<KP>(src + hd, v);  // bf16 values: stored back exactly
    const int64_t page = G.page[s];
    if (page < 0 || page >= h.n_pages) {
      if (lane == 0) dev_fail(P, kErrBadPage, task, int32_t(page));
    } else {
      const int64_t off = kv_offset(h, page, kvh, G.pos[s], lane * KP);
      store_row_bf16<KP>(kcache + off, y);
      store_row_bf16<KP>(vcache + off, v);
    }
  }
  // The barrier orders the appends before every warp's copies of them (the
  // streaming loop reads the positions through the cache).
  csync();
  if (threadIdx.x == 0) {
    if (R.gate) *R.gate = R.entry;                  // the loader may stream again
    if (P.trace) R.t_prep = dev::globaltimer_ns();  // trace: epilogues and appends done
  }
  // ---- each sequence's positions over its WS warps (every warp calls: the loop's barrier) ----
  const int s = warp / WS < n ? warp / WS : n - 1;
  int64_t p0 = 0, p1 = 0;
  if (warp / WS < n) ops::attention_positions(h, t, G.pos[s], &p0, &p1);
  float* wo = reinterpret_cast<float*>(reinterpret_cast<char*>(smem) + ops::attn_kv_offset(h));  // [kWarps][g][hd + 2]
  constexpr int64_t kWarpStaging = int64_t(program::kAttnStreamStages) * program::attn_stream_stage_elems(hd);
  attn_stream_smem<KP, 8, program::kAttnStreamStages, true>(P, R.pages, task, t.b0 + s, kvh, p0, p1, G.qs + s * g * hd,
                                                            g, wo + warp * g * (hd + 2), nullptr,
                                                            reinterpret_cast<uint16_t*>(G.pos) + warp * kWarpStaging,
                                                            warp % WS, WS);
  if (P.trace && threadIdx.x == 0) R.t_first = dev::globaltimer_ns();  // trace: positions done
  csync();
  // ---- each sequence's output from its warps' states (one chunk: no arrival count) ----
  float* part = bp<float>(P, t.buf[AttnSlots::kPartial]);
  uint16_t* out = bp<uint16_t>(P, t.buf[AttnSlots::kOut]);
  for (int q = 0; q < n; ++q) {
    const int64_t b = t.b0 + q;
    const float* w = wo + q * WS * g * (hd + 2);
    float* pq = part + (b * h.n_kv_heads + kvh) * g * (hd + 2);
    uint16_t* oq = out + b * h.n_heads * hd + int64_t(kvh) * g * hd;
    if (WS == 4) merge_warp_partials<true, 4>(w, g, hd, pq, oq);
    else if (WS == 2) merge_warp_partials<true, 2>(w, g, hd, pq, oq);
    else merge_warp_partials<true, 1>(w, g, hd, pq, oq);
  }
}

/// attention_group for the Program's head_dim (32, 64 or 128:
/// program::attn_group_serves): one call site in the kernel, out of line.
__device__ __noinline__ void attention_group_any(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                 RingView& R) {
  const int hd = P.h.head_dim;
  const bool pre_done = P.work_bytes > 0;  // pre_wait ran attention_group_pre (the persistent kernel)
  if (hd == 64) attention_group<2>(P, t, task, smem, R, pre_done);
  else if (hd == 128) attention_group<4>(P, t, task, smem, R, pre_done);
  else if (hd == 32) attention_group<1>(P, t, task, smem, R, pre_done);
  else if (threadIdx.x == 0) dev_fail(P, kErrHeadDim, task, hd);
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
  ops::attention_positions(h, t, pos, &p0, &p1, kMm);  // (batch-1 Programs have no minimum chunk)
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
  /// Work that does not depend on this step's producers: for a task of
  /// several sequences (the batch kernels' attention_group) its prep
  /// (attention_group_pre: positions, pages, head-norm weights, RoPE tables);
  /// otherwise the K/V rows of earlier positions into shared memory.
  static __device__ __forceinline__ void pre_wait(const DevProgram& P, const TaskDesc& t, float* work, const RingView& R) {
    if constexpr (kMm)
      if (t.b1 - t.b0 > 1) return attention_group_pre(P, t, work, R);
    if (idle_lane(P, t)) return;
    attn_prefetch(P, t, work, R);
  }
  /// A prefill lane that is done (its positions are in the cache) appends and
  /// reads nothing: its frozen position is another step's, maybe another lane's.
  static __device__ __forceinline__ bool idle_lane(const DevProgram& P, const TaskDesc& t) {
    return kMm && program::is_prefill_lane(P.h, t.b0) &&  // prefill lanes: batch variants only
           reinterpret_cast<const volatile SeqState*>(bp<const SeqState>(P, t.buf[AttnSlots::kState]))[t.b0].done != 0;
  }
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                  float* scratch, RingView& R) {
    // Several sequences: the batch kernels, the streaming shapes (program::
    // attn_group_serves; the decode kernels run batch-1 Programs only).
    if constexpr (kMm)
      if (t.b1 - t.b0 > 1) return attention_group_any(P, t, task, smem, R);
    if (idle_lane(P, t)) return;
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
