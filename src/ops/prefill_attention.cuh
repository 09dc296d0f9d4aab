// PrefillAttention's device body (see prefill_attention.h): flash attention on
// mma.sync (m16n8k16, bf16 in, fp32 accumulate) for a block of a prompt's lanes.
//  * Rows: lane-major (row r = lane r / g, q head r % g of kv_head), in row
//    groups of 16; q after its epilogue (a warp per lane for its g heads,
//    RowEpilogue), rounded to bf16, in shared memory, read as A fragments.
//  * Positions: rounds of 16 x phases positions of the range the block's lanes
//    attend to (the first lane's window start to the last lane's pos), K and
//    V rows copied with cp.async into one of two buffers a round ahead (rows
//    outside the range zero-filled; the range's pages in shared memory, each
//    thread a contiguous run of pieces, so a row's page is found once). Warp w takes row group w % groups and the
//    16 positions (w / groups) of each round: S = Q K^T (K rows through
//    ldmatrix as B), the causal / window mask per row, an online softmax per row
//    (p rounded to bf16, the row sums summed from the rounded p), O += P V (V
//    through ldmatrix.trans).
//  * The phases' (O, m, l) meet in shared memory; out = O / l in bf16.
// Summation order and p's rounding differ from the CPU twin's (fp32 p):
// within the tolerances of the other tensor-core tasks.
#pragma once

#include "exec/cuda/attention_common.cuh"
#include "ops/prefill_attention.h"
#include "program/smem_plan.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using PrefillAttnSlots = ops::PrefillAttentionOperands;

template <int HD>
__device__ __noinline__ void prefill_attention_tc(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                     const RingView& R) {
  const ProgramHeader& h = P.h;
  constexpr int kPitch = HD + 8;  // bf16 a shared row: 16 bytes of padding put ldmatrix's 8 rows on distinct banks
  const int g = h.n_heads / h.n_kv_heads, kvh = t.arg[PrefillAttnSlots::kKvHead];
  const int nl = t.b1 - t.b0, rows = nl * g;
  const int nrw = program::prefill_attn_row_groups(rows), nps = program::prefill_attn_phases(rows);
  const int round_len = 16 * nps;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  char* base = reinterpret_cast<char*>(smem);
  uint16_t* qs = reinterpret_cast<uint16_t*>(base);
  uint16_t* kvs = reinterpret_cast<uint16_t*>(base + program::prefill_attn_kv_offset(HD, rows));
  float* merge = reinterpret_cast<float*>(kvs);  // after the last round

  // Each warp: lane i (< nl) holds lane b0 + i's position, or -1 when it is done.
  int64_t my_pos = -1;
  if (lane < nl) {
    bool done;
    lane_state(P, t.b0 + lane, &my_pos, &done);
    if (done) my_pos = -1;
  }
  int64_t my_lo = 0, my_hi = 0;  // [lo, hi) the lane attends to (empty when done)
  if (my_pos >= 0) ops::prefill_attention_positions(h, t, my_pos, &my_lo, &my_hi);
  int64_t lo = my_pos >= 0 ? my_lo : INT64_MAX, hi = my_hi;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  if (hi <= 0) return;  // every lane done (uniform across the CTA)
  const int64_t start = lo / 16 * 16;
  const int nrounds = int((hi - start + round_len - 1) / round_len);

  // The pages of [lo, hi) from the block's first lane's page-table row, in
  // shared memory (up to kPrefillAttnPages; past that, page_of at each row).
  int32_t* pages = reinterpret_cast<int32_t*>(base + program::prefill_attn_pages_offset(HD, rows));
  const int64_t pg0 = lo / h.page_size, npg = (hi - 1) / h.page_size - pg0 + 1;
  const bool cached = npg <= program::kPrefillAttnPages;
  if (cached)
    for (int i = threadIdx.x; i < npg; i += kThreads) pages[i] = int32_t(page_of(P, R, t.b0, (pg0 + i) * h.page_size));
  csync();

  // K and V rows of round r into buffer r % 2, positions outside [lo, hi) as
  // zeros. Thread i copies a contiguous run of the round's 16-byte pieces
  // (K rows, then V rows), so it finds a row's page once.
  const int32_t kc = t.buf[PrefillAttnSlots::kKCache], vc = t.buf[PrefillAttnSlots::kVCache];
  constexpr int kPieces = HD / 8;  // 16-byte pieces a row
  const int n_items = 2 * round_len * kPieces, per_thread = (n_items + kThreads - 1) / kThreads;
  auto issue = [&](int r) {
    uint16_t* buf = kvs + (r & 1) * 2 * round_len * kPitch;
    const int i0 = threadIdx.x * per_thread, i1 = min(n_items, i0 + per_thread);
    int64_t row_off = -1;
    int last_row = -1;
    for (int i = i0; i < i1; ++i) {
      const int row = i / kPieces, piece = i % kPieces;  // row: K rows [0, round_len), then V rows
      const int rr = row % round_len;
      const int64_t p = start + int64_t(r) * round_len + rr;
      uint16_t* dst = buf + row * kPitch + piece * 8;
      if (row != last_row) {
        last_row = row;
        row_off = -1;
        if (p >= lo && p < hi) {
          const int64_t page = cached ? pages[p / h.page_size - pg0] : page_of(P, R, t.b0, p);
          if (page >= 0 && page < h.n_pages) row_off = kv_offset(h, page, kvh, p, 0);
          else dev_fail(P, kErrBadPage, task, int32_t(page));
        }
      }
      if (row_off >= 0) {
        const uint16_t* src = bp<const uint16_t>(P, row < round_len ? kc : vc) + row_off + piece * 8;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(dst)), "l"(src) : "memory");
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  issue(0);

  // q epilogue, a warp per lane (lanes warp, warp + 8, ...) for its g heads:
  // the rotation once per lane, the g raw rows loaded together. Padding rows zero.
  {
    RowEpilogue<HD> epi(P, t.buf[PrefillAttnSlots::kQNorm], lane);
    constexpr int E = RowEpilogue<HD>::E;
    const uint16_t* raw = bp<const uint16_t>(P, t.buf[PrefillAttnSlots::kQkv]);
    for (int l = warp; l < nl; l += kWarps) {
      const int64_t pos = __shfl_sync(0xffffffffu, my_pos, l);
      if (pos < 0) continue;
      epi.rope(pos);
      const uint16_t* src = raw + int64_t(t.b0 + l) * qkv_w(h) + int64_t(kvh) * g * HD;
      for (int j0 = 0; j0 < g; j0 += 4) {  // 4 heads' loads in flight at a time
        float y[4][E];
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int e = 0; e < E; ++e) {
            const int i = lane + 32 * e;
            y[j][e] = j0 + j < g && i < HD ? bf16_to_f32(__ldcg(src + (j0 + j) * HD + i)) : 0.0f;
          }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (j0 + j >= g) break;
          epi.apply(y[j], h.rms_eps, lane);
          uint16_t* q = qs + (l * g + j0 + j) * kPitch;
#pragma unroll
          for (int e = 0; e < E; ++e)
            if (lane + 32 * e < HD) q[lane + 32 * e] = f32_to_bf16(y[j][e]);
        }
      }
    }
    // Rows of done lanes and the padding up to 16 x row groups: zeros.
    for (int i = threadIdx.x; i < 16 * nrw * HD; i += kThreads) {
      const int r = i / HD;
      const int64_t pos = __shfl_sync(0xffffffffu, my_pos, min(r / g, 31));
      if (r >= rows || pos < 0) qs[r * kPitch + i % HD] = 0;
    }
  }
  csync();

  // This warp's rows and phase; rows r0 = 16 rg + lane / 4 and r1 = r0 + 8.
  const int rg = warp % nrw, ph = warp / nrw;
  const bool computes = warp < nrw * nps;
  const int r0 = rg * 16 + (lane >> 2), r1 = r0 + 8;
  // (Every lane shuffles, then rows past the block's drop out: a shuffle in
  // a divergent branch would wait for the lanes that skipped it.)
  const int64_t sh0 = __shfl_sync(0xffffffffu, my_pos, min(r0 / g, 31));
  const int64_t sh1 = __shfl_sync(0xffffffffu, my_pos, min(r1 / g, 31));
  const int64_t pos0 = r0 < rows ? sh0 : -1, pos1 = r1 < rows ? sh1 : -1;
  int64_t lo0 = 0, hi0 = 0, lo1 = 0, hi1 = 0;  // each row's [lo, hi)
  if (pos0 >= 0) ops::prefill_attention_positions(h, t, pos0, &lo0, &hi0);
  if (pos1 >= 0) ops::prefill_attention_positions(h, t, pos1, &lo1, &hi1);
  // The warp's range (a sub-block outside it is skipped).
  int64_t wlo = min(pos0 >= 0 ? lo0 : INT64_MAX, pos1 >= 0 ? lo1 : INT64_MAX), whi = max(hi0, hi1);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    wlo = min(wlo, __shfl_xor_sync(0xffffffffu, wlo, o));
    whi = max(whi, __shfl_xor_sync(0xffffffffu, whi, o));
  }

  // q's A fragments are read from shared memory at each k-step (in registers
  // they would cost HD / 4 of the kernel's 168).
  const uint32_t qa_addr = dev::smem_addr(qs + (rg * 16 + (lane & 15)) * kPitch + (lane >> 4) * 8);
  float o[HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const float scale = h.attn_scale;

#pragma unroll 1
  for (int r = 0; r < nrounds; ++r) {
    if (r + 1 < nrounds) issue(r + 1);
    else asm volatile("cp.async.commit_group;" ::: "memory");
    asm volatile("cp.async.wait_group 1;" ::: "memory");
    csync();  // round r landed for every thread
    const int64_t p_sb = start + int64_t(r) * round_len + 16 * ph;  // this warp's 16 positions
    if (computes && p_sb < whi && p_sb + 16 > wlo) {
      const uint16_t* kb = kvs + (r & 1) * 2 * round_len * kPitch + (16 * ph) * kPitch;
      const uint16_t* vb = kb + round_len * kPitch;
      float s[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      const uint32_t ka = dev::smem_addr(kb + ((lane & 7) + 8 * (lane >> 4)) * kPitch + ((lane >> 3) & 1) * 8);
#pragma unroll
      for (int ks = 0; ks < HD / 16; ++ks) {
        uint32_t kf[4], qa[4];
        ldmatrix_x4_rows(qa, qa_addr + ks * 32);
        ldmatrix_x4_rows(kf, ka + ks * 32);
        dev::mma_bf16(s[0], qa, kf[0], kf[1]);
        dev::mma_bf16(s[1], qa, kf[2], kf[3]);
      }
      // Mask and scale: element (j, e) is row e < 2 ? r0 : r1, position p_sb + 8 j + 2 (lane % 4) + e % 2.
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t p = p_sb + 8 * j + 2 * (lane & 3) + (e & 1);
          const bool ok = e < 2 ? (p >= lo0 && p < hi0) : (p >= lo1 && p < hi1);
          s[j][e] = ok ? s[j][e] * scale : -INFINITY;
        }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
      }
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
      }
      const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
      // A row with no position yet (n = -inf) keeps everything at zero.
      const float c0 = n0 == -INFINITY ? 1.0f : expf(m0 - n0), c1 = n1 == -INFINITY ? 1.0f : expf(m1 - n1);
      uint32_t pa[4];
      float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float e0 = n0 == -INFINITY ? 0.0f : round_bf16(expf(s[j][0] - n0));
        const float e1 = n0 == -INFINITY ? 0.0f : round_bf16(expf(s[j][1] - n0));
        const float e2 = n1 == -INFINITY ? 0.0f : round_bf16(expf(s[j][2] - n1));
        const float e3 = n1 == -INFINITY ? 0.0f : round_bf16(expf(s[j][3] - n1));
        sum0 += e0 + e1;
        sum1 += e2 + e3;
        pa[2 * j] = pack_bf16x2(e0, e1);
        pa[2 * j + 1] = pack_bf16x2(e2, e3);
      }
      l0 = l0 * c0 + sum0;
      l1 = l1 * c1 + sum1;
      m0 = n0;
      m1 = n1;
#pragma unroll
      for (int j = 0; j < HD / 8; ++j) o[j][0] *= c0, o[j][1] *= c0, o[j][2] *= c1, o[j][3] *= c1;
      const uint32_t va = dev::smem_addr(vb + ((lane & 7) + 8 * ((lane >> 3) & 1)) * kPitch + (lane >> 4) * 8);
#pragma unroll
      for (int dn = 0; dn < HD / 16; ++dn) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, va + dn * 32);
        dev::mma_bf16(o[2 * dn], pa, vf[0], vf[1]);
        dev::mma_bf16(o[2 * dn + 1], pa, vf[2], vf[3]);
      }
    }
    csync();  // every warp is done with buffer r % 2 before round r + 2 fills it
  }
  asm volatile("cp.async.wait_all;" ::: "memory");

  // The phases' states into the merge area: slot (rg, ph), row i, [o[hd], m, l].
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  if (computes) {
    float* slot = merge + (rg * nps + ph) * 16 * (HD + 2);
    const int i0 = lane >> 2, c = 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      slot[i0 * (HD + 2) + 8 * j + c] = o[j][0];
      slot[i0 * (HD + 2) + 8 * j + c + 1] = o[j][1];
      slot[(i0 + 8) * (HD + 2) + 8 * j + c] = o[j][2];
      slot[(i0 + 8) * (HD + 2) + 8 * j + c + 1] = o[j][3];
    }
    if ((lane & 3) == 0) {
      slot[i0 * (HD + 2) + HD] = m0, slot[i0 * (HD + 2) + HD + 1] = l0;
      slot[(i0 + 8) * (HD + 2) + HD] = m1, slot[(i0 + 8) * (HD + 2) + HD + 1] = l1;
    }
  }
  csync();
  uint16_t* out = bp<uint16_t>(P, t.buf[PrefillAttnSlots::kOut]);
  for (int idx = threadIdx.x; idx < rows * HD; idx += kThreads) {
    const int r = idx / HD, d = idx % HD, grp = r / 16, i = r % 16;
    const float* s0 = merge + grp * nps * 16 * (HD + 2) + i * (HD + 2);
    float M = -INFINITY;
    for (int q = 0; q < nps; ++q) M = fmaxf(M, s0[q * 16 * (HD + 2) + HD]);
    if (M == -INFINITY) continue;  // a done lane (or no position at all): nothing to write
    float acc = 0.0f, L = 0.0f;
    for (int q = 0; q < nps; ++q) {
      const float* st = s0 + q * 16 * (HD + 2);
      if (st[HD + 1] == 0.0f) continue;
      const float sc = expf(st[HD] - M);
      acc += st[d] * sc;
      L += st[HD + 1] * sc;
    }
    out[int64_t(t.b0 + r / g) * h.n_heads * HD + int64_t(kvh * g + r % g) * HD + d] = f32_to_bf16(acc / L);
  }
  csync();  // the work area is the next task's
}

template <>
struct DeviceOp<ops::PrefillAttention> {
  static constexpr bool kBatchOnly = true;  // prefill Programs run on the batch kernels
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                             float*, RingView& R) {
    // Only prefill Programs have prefill_attention tasks, and they run on the batch kernels.
    if constexpr (kMm) {
      switch (P.h.head_dim) {
        case 16: prefill_attention_tc<16>(P, t, task, smem, R); return;
        case 32: prefill_attention_tc<32>(P, t, task, smem, R); return;
        case 64: prefill_attention_tc<64>(P, t, task, smem, R); return;
        case 128: prefill_attention_tc<128>(P, t, task, smem, R); return;
        default: break;
      }
    }
    if (threadIdx.x == 0) dev_fail(P, kErrBadOpcode, task, t.opcode);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
