// The matmul engine of the matvec opcodes when a task serves several
// sequences (QkvProj, GateUp, MatvecResidual, LmHead with stage_cols() > 0):
// each weight tile streams through the ring once per step, whatever the batch,
// and tensor cores multiply it with every sequence's input. Two engines, the
// Program's choice (TargetDesc::mm_engine):
//  * wgmma (mm_wgmma.cuh; the default over 16 tokens a step): Hopper's warpgroup MMA reads the
//    stage and a swizzled copy of the inputs straight from shared memory. Its
//    loop is inlined into the kernel function at one place (mm_defer /
//    mm_run_deferred below): ptxas serialises the wgmma of a called function.
//  * mma.sync (mm_rows below; the default for batches of 2-16): m16n8k16 on ldmatrix fragments, bf16 in, fp32
//    accumulate; also what a caller without a deferred slot runs.
//
// Per stage the ring holds stage_rows() (<= 64) rows x kc = stage_cols() columns of each matrix
// as TMA panels of 64 columns with the 128-byte swizzle (program/smem_plan.h,
// program_kernel.cu loader_chunks); the compute warps copy the same kc columns
// of the sequences' bf16 inputs (normed rows of an RmsNorm task, or the
// attention output / MLP hidden) into one of two work-area buffers with
// cp.async, one stage ahead. In mm_rows the weights are mma's A operand (16 rows per
// fragment, 4 row groups), the inputs its B operand (8 sequences per fragment);
// warp w owns row group w % 4 and token groups w / 4, w / 4 + 2, ... — with one
// token group (8 sequences or fewer) the two warps of a row group split the
// k-steps and add their partials in a fixed order. After a row block's last
// chunk the epilogue of MatvecJob::kind (bias, bf16 or SiLU(g)*u, fp32 residual
// add, logits) runs on the accumulators; LmHead then reduces each sequence's
// (max, lowest argmax) over the tile's logits. Summation order differs from the
// CPU twin's (tensor-core k order), within the same tolerances as the matvecs.
#pragma once

#include "exec/cuda/matvec.cuh"
#include "program/smem_plan.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

/// A matmul task's inputs and outputs (the rest is its MatvecJob: kind, rows, biases).
struct MmJob {
  const uint16_t* a;  // the input rows' first column (k0) of sequence b0, bf16
  int64_t lda;        // elements between consecutive sequences' input rows
  void* out;          // output row of sequence b0 (bf16 or fp32 per kind)
  int64_t ldo;        // elements between consecutive sequences' output rows
  int nb;             // sequences (<= kMmMaxTokens)
};

using dev::mma_bf16;

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t& r0, uint32_t& r1, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];" : "=r"(r0), "=r"(r1) : "r"(addr));
}

/// A thread's share of an input chunk's 16-byte pieces (per_row = kc / 8 a
/// row): pieces i = threadIdx.x, + kThreads, ... as (row b, piece q), stepped
/// without a division (one per task, at setup).
struct MmFillIdx {
  int b0, q0, db, dq, per_row;
  __device__ __forceinline__ explicit MmFillIdx(int kc)
      : b0(int(threadIdx.x) / (kc / 8)), q0(int(threadIdx.x) % (kc / 8)), db(kThreads / (kc / 8)),
        dq(kThreads % (kc / 8)), per_row(kc / 8) {}
};

/// Issues the cp.async copies of column chunk `c` (kc columns) of the nb input
/// rows into `buf` (row pitch kc + 8 elements); the caller commits the group.
__device__ __forceinline__ void mm_fill(const MmJob& M, const MmFillIdx& F, int c, int kc, uint16_t* buf) {
  const int pitch = kc + 8;
  const uint16_t* a = M.a + int64_t(c) * kc;
  for (int b = F.b0, q = F.q0; b < M.nb;) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(buf + b * pitch + q * 8)),
                 "l"(a + int64_t(b) * M.lda + q * 8)
                 : "memory");
    b += F.db, q += F.dq;
    if (q >= F.per_row) q -= F.per_row, ++b;
  }
}

/// Waits until at most `n` (0 .. kMmMaxSlots - 2) of this thread's cp.async groups are pending.
__device__ __forceinline__ void cp_async_wait_pending(int n) {
  switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
  }
}

/// The ring as a matmul tile's stage loop walks it, in registers (R lives in
/// the caller's local memory): the slot and phase of the next stage.
struct MmRingPos {
  const char* ring;
  size_t stage_bytes;
  uint64_t* full;
  uint64_t* empty;
  int n_stages;
  uint32_t seq0;  // the ring sequence number of the tile's first stage
  int slot;
  uint32_t phase;
  __device__ __forceinline__ explicit MmRingPos(const RingView& R)
      : ring(R.ring), stage_bytes(R.stage_bytes), full(R.full), empty(R.empty), n_stages(R.n_stages), seq0(R.seq),
        slot(int(R.seq % uint32_t(R.n_stages))), phase((R.seq / uint32_t(R.n_stages)) & 1) {}
  __device__ __forceinline__ char* at(int sl) const { return const_cast<char*>(ring) + size_t(sl) * stage_bytes; }
  __device__ __forceinline__ void advance() {
    if (++slot == n_stages) slot = 0, phase ^= 1;
  }
};

/// The input side of a matmul tile's stage loop (both engines): column chunk
/// c of the inputs goes into buffer slot c % na (of na), na - 1 stages ahead
/// of the stage that reads it, one cp.async commit group per stage (empty past
/// the end), so "stage s landed" is always "at most na - 2 groups pending".
/// `fill(chunk, slot)` issues one chunk's copies; the caller commits nothing.
template <class Fill>
struct MmInputs {
  Fill fill;
  int nk, na, nst;  // chunks a row block, buffer slots, stages
  int fill_c = 0, fill_buf = 0;
  __device__ __forceinline__ MmInputs(Fill f, int nk_, int na_, int nst_) : fill(f), nk(nk_), na(na_), nst(nst_) {}
  __device__ __forceinline__ void next() {
    fill(fill_c, fill_buf);
    if (++fill_c == nk) fill_c = 0;
    if (++fill_buf == na) fill_buf = 0;
  }
  /// Before the first stage: the first na - 1 chunks in flight.
  __device__ __forceinline__ void prime() {
    for (int q = 0; q < na - 1; ++q) {
      if (q < nst) next();
      asm volatile("cp.async.commit_group;" ::: "memory");
    }
  }
  /// Stage s's chunk landed (this thread's copies; a barrier makes it everyone's).
  __device__ __forceinline__ void wait() const { cp_async_wait_pending(na - 2); }
  /// After that barrier (every thread is done with stage s - 1's buffer): its
  /// buffer takes the chunk of stage s + na - 1.
  __device__ __forceinline__ void refill(int s) {
    if (s + na - 1 < nst) next();
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
};

/// One output element of a matmul tile: row r (task row numbering), sequence
/// b (0-based in the task), y0 (y1: the up projection for GateUp).
__device__ __forceinline__ void mm_epi(const DevProgram& P, const MatvecJob& J, const MmJob& M, int64_t r, int b,
                                       float y0, float y1) {
  const int64_t o = int64_t(b) * M.ldo + r;
  switch (J.kind) {
    case kEpiQkv:
      if (J.bias0 >= 0) y0 += load_f32(P, J.bias0, r - J.shift);
      static_cast<uint16_t*>(M.out)[o] = f32_to_bf16(y0);
      break;
    case kEpiGateUp:
      if (J.bias0 >= 0) y0 += load_f32(P, J.bias0, r);
      if (J.bias1 >= 0) y1 += load_f32(P, J.bias1, r);
      static_cast<uint16_t*>(M.out)[o] = f32_to_bf16(y0 / (1.0f + expf(-y0)) * y1);
      break;
    case kEpiResidual:
      if (J.bias0 >= 0) y0 += load_f32(P, J.bias0, r);
      atomicAdd(static_cast<float*>(M.out) + o, y0);
      break;
    default: static_cast<float*>(M.out)[o] = y0;
  }
}

inline constexpr int kMmRowGroups = int(program::kMmRows) / 16;  // 4
inline constexpr int kMmMaxSlots = 6;  // input buffers in flight at most (chunks copied ahead: slots - 1)
using program::kMmRedBytes;  // split-warp partials, at the work area's start
inline constexpr int kMmMaxTilesPerWarp = program::kMmMaxTokens / 8 / 2;  // token groups per warp: 4
static_assert(kWarps == 2 * kMmRowGroups, "the mapping gives each row group two warps");

__device__ __forceinline__ void mm_zero(float (&acc)[kMmMaxTilesPerWarp][2][4]) {
#pragma unroll
  for (int j = 0; j < kMmMaxTilesPerWarp; ++j)
#pragma unroll
    for (int m = 0; m < 2; ++m)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][m][e] = 0.0f;
}

/// One k-step's fragments of a warp: the A fragments of its row group (one per
/// matrix) and the B fragments of its token groups.
struct MmFrag {
  uint32_t a0[4], a1[4];
  uint32_t b[kMmMaxTilesPerWarp][2];
};

/// Loads the fragments at A address `a` (second matrix at a + a_mat1 when
/// TWO) and B address `b` of the warp's NT token groups (the j-th 8 j
/// tg_step rows of `apitch` elements further).
template <int NT, bool TWO>
__device__ __forceinline__ void mm_load(MmFrag& f, uint32_t a, uint32_t a_mat1, uint32_t b, uint32_t tg_bytes) {
  ldmatrix_x4(f.a0, a);
  if constexpr (TWO) ldmatrix_x4(f.a1, a + a_mat1);
#pragma unroll
  for (int j = 0; j < NT; ++j) ldmatrix_x2(f.b[j][0], f.b[j][1], b + uint32_t(j) * tg_bytes);
}

template <int NT, bool TWO>
__device__ __forceinline__ void mm_mma(float (&acc)[kMmMaxTilesPerWarp][2][4], const MmFrag& f) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    mma_bf16(acc[j][0], f.a0, f.b[j][0], f.b[j][1]);
    if constexpr (TWO) mma_bf16(acc[j][1], f.a1, f.b[j][0], f.b[j][1]);
  }
}

/// A warp's k-steps ks0, ks0 + split, ... < nks of one stage (an even count:
/// kc is a multiple of 64), two at a time, the next one's fragments loaded
/// before this one's mma. NT token groups and TWO matrices are compile-time,
/// so the loop is straight-line loads and mma (no branch around each mma).
/// A fragment address of k-step ks: a_row + (ks / 4) panels, 16-byte unit
/// ((ks % 4) * 2 + lane / 16) swizzled by the row (ar % 8).
template <int NT, bool TWO>
__device__ __forceinline__ void mm_ksteps(float (&acc)[kMmMaxTilesPerWarp][2][4], uint32_t a_row, uint32_t panel,
                                          uint32_t a_mat1, uint32_t b_addr, uint32_t tg_bytes, int ks0, int split,
                                          int nks, int hi, int swz) {
  auto a_at = [&](int ks) { return a_row + uint32_t(ks >> 2) * panel + uint32_t((((ks & 3) << 1 | hi) ^ swz) << 4); };
  MmFrag f0, f1;
  mm_load<NT, TWO>(f0, a_at(ks0), a_mat1, b_addr + ks0 * 32, tg_bytes);
#pragma unroll 1
  for (int ks = ks0; ks < nks; ks += 2 * split) {
    mm_load<NT, TWO>(f1, a_at(ks + split), a_mat1, b_addr + (ks + split) * 32, tg_bytes);
    mm_mma<NT, TWO>(acc, f0);
    if (ks + 2 * split < nks) mm_load<NT, TWO>(f0, a_at(ks + 2 * split), a_mat1, b_addr + (ks + 2 * split) * 32, tg_bytes);
    mm_mma<NT, TWO>(acc, f1);
  }
}

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog

#include "exec/cuda/mm_wgmma.cuh"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

/// The matmul of rows [J.row0, J.row1) of tile T (a matmul tile: T.seg is one
/// column chunk, J.K / chunk of them per row block) with the nb input rows of
/// M, through the ring. `work` is the work area: the split-warp partials, then
/// as many input buffers as fit (2 .. kMmMaxSlots; program::mm_work_bytes
/// guarantees 2), filled that many - 1 chunks ahead. Ends with a barrier.
__device__ __noinline__ void mm_rows(const DevProgram& P, const Tile& T, RingView& R, const MatvecJob& J,
                                     const MmJob& M, float* work) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kc = int(T.seg / 2), nk = int(J.K / kc), cap = T.cap;
  if (cap > int(program::kMmRows)) {  // a tall block (program::mm_max_rows) is the wgmma engine's only
    if (threadIdx.x == 0) dev_fail(P, kErrMmTile, -1, cap);
    return;  // the kernel leaves: the executor runs such Programs on a variant with mm_rows_wg
  }
  const int rows = int(T.rows), nrb = (rows + cap - 1) / cap, nst = nrb * nk;
  const int ntg = (M.nb + 7) / 8;               // token groups of 8
  const int split = ntg == 1 ? 2 : 1;           // warps per (row group, token group)
  const int rg = warp % kMmRowGroups, half = warp / kMmRowGroups;
  const int tokens_max = program::mm_tokens(P.h.batch);
  const int nrg = (cap + 15) / 16;              // row groups of a stage (a warp beyond them only keeps count)
  const int apitch = kc + 8;                    // elements
  // The weights: panel (matrix m, column group g) of cap rows x 128 bytes at
  // (m * ng + g) * panel; 16-byte unit u of row r at unit u ^ (r % 8) (the
  // TMA's 128-byte swizzle: ldmatrix's 8 rows of one unit hit 8 bank groups).
  const int ng = kc / program::kMmBoxCols;
  const uint32_t panel = uint32_t(cap) * (program::kMmBoxCols * 2);
  float* red = work;
  uint16_t* bufs = reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(work) + kMmRedBytes);
  const size_t buf_elems = size_t(tokens_max) * (program::mm_stage_cols(P.h) + 8);
  const int na = max(2, min(kMmMaxSlots, int((P.work_bytes - kMmRedBytes) / (buf_elems * 2))));
  // This warp's token groups: tg = half + 2j (split 1), or the one group (split 2).
  const int ntile = split == 2 ? 1 : (ntg - half + 1) / 2;
  const int g = lane >> 2, tq = lane & 3;
  // The k-steps' fixed parts: this warp's A row (rows rg*16 + (lane % 16),
  // columns +8 for lanes 16..31), its B rows (sequence tg*8 + (lane % 8),
  // columns +8 for lanes 8..15, token groups tg0, tg0 + tg_step, ...).
  const int ar = rg * 16 + (lane & 15);
  const uint32_t a_mat1 = uint32_t(ng) * panel;  // the second matrix (GateUp's up rows)
  const int nks = kc / 16, ks0 = split == 2 ? half : 0;
  const int tg0 = split == 2 ? 0 : half, tg_step = split == 2 ? 0 : 2;
  const uint32_t b_off = uint32_t((lane & 7) * apitch + ((lane >> 3) & 1) * 8 + tg0 * 8 * apitch) * 2;
  const uint32_t tg_bytes = uint32_t(tg_step * 8 * apitch) * 2;
  const int kind = (T.nmat == 2 ? 1 : 0) + 2 * (ntile - 1);  // mm_ksteps<ntile, two>

  float acc[kMmMaxTilesPerWarp][2][4];
  mm_zero(acc);

  // Every index of the stage loop steps without a division: the chunk and
  // buffer of the next fill (MmInputs), the buffer and row block / chunk of
  // this stage, the ring slot and its phase (MmRingPos).
  const MmFillIdx F(kc);
  int use_buf = 0, rb = 0, c = 0;
  MmRingPos G(R);
  MmInputs in([&](int chunk, int buf) { mm_fill(M, F, chunk, kc, bufs + size_t(buf) * buf_elems); }, nk, na, nst);
  in.prime();
#pragma unroll 1
  for (int s = 0; s < nst; ++s) {
    in.wait();
    csync();  // chunk s landed for every thread; every warp is done with chunk s - 1's buffer
    in.refill(s);
    const char* stage = G.at(G.slot);
    if (P.trace && threadIdx.x == 0 && s == 0) R.t_prep = R.t_first = dev::globaltimer_ns();
    if (!dev::mbar_test_wait(G.full + G.slot, G.phase) && !ring_wait_phase(P, R, G.slot, G.phase)) {
      R.seq = G.seq0 + uint32_t(s);
      asm volatile("cp.async.wait_all;" ::: "memory");
      return;  // aborting: the kernel leaves after this task
    }
    if (P.trace && threadIdx.x == 0 && s + 1 == nst) R.t_last = dev::globaltimer_ns();
    const uint32_t a_row = dev::smem_addr(stage) + uint32_t(ar) * (program::kMmBoxCols * 2);
    const uint32_t b_addr = dev::smem_addr(bufs + size_t(use_buf) * buf_elems) + b_off;
    if (++use_buf == na) use_buf = 0;
    if (rg < nrg) {
      const int hi = lane >> 4, swz = ar & 7;
      switch (kind) {
        case 0: mm_ksteps<1, false>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
        case 1: mm_ksteps<1, true>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
        case 2: mm_ksteps<2, false>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
        case 3: mm_ksteps<2, true>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
        case 4: mm_ksteps<3, false>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
        case 5: mm_ksteps<3, true>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
        case 6: mm_ksteps<4, false>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
        default: mm_ksteps<4, true>(acc, a_row, panel, a_mat1, b_addr, tg_bytes, ks0, split, nks, hi, swz); break;
      }
    }
    __syncwarp();
    if (lane == 0) dev::mbar_arrive(G.empty + G.slot);
    G.advance();
    if (++c < nk) continue;
    c = 0;
    // The row block's epilogue.
    if (split == 2) {
      if (half == 1)
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int e = 0; e < 4; ++e) red[((rg * 2 + m) * 32 + lane) * 4 + e] = acc[0][m][e];
      csync();
      if (half == 0)
#pragma unroll
        for (int m = 0; m < 2; ++m)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[0][m][e] += red[((rg * 2 + m) * 32 + lane) * 4 + e];
    }
    if ((split == 1 || half == 0) && rg < nrg) {
#pragma unroll
      for (int j = 0; j < kMmMaxTilesPerWarp; ++j) {
        if (j < ntile) {
          const int tg = split == 2 ? 0 : half + 2 * j;
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int64_t r = J.row0 + int64_t(rb) * cap + rg * 16 + g + (e >= 2 ? 8 : 0);
            const int b = tg * 8 + 2 * tq + (e & 1);
            if (r < J.row1 && b < M.nb) mm_epi(P, J, M, r, b, acc[j][0][e], acc[j][1][e]);
          }
        }
      }
    }
    mm_zero(acc);
    ++rb;
  }
  R.seq = G.seq0 + uint32_t(nst);
  csync();
}

/// LmHead after mm_rows: each sequence's (max, lowest argmax) over the tile's
/// logits [J.row0, J.row1) into its partial (one warp per sequence).
__device__ __noinline__ void mm_argmax(const DevProgram& P, const MatvecJob& J, const MmJob& M, float* part0,
                                       int64_t part_stride) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int b = warp; b < M.nb; b += kWarps) {
    const float* lg = static_cast<const float*>(M.out) + int64_t(b) * M.ldo;
    float best = -INFINITY;
    int32_t best_i = INT32_MAX;
    // Eight loads in flight, compared in row order (ties keep the lowest row):
    // one at a time, a tile's ~1150 rows x 8 sequences a warp took ~110 us of
    // an LM-head task at batch 64 (H100).
    for (int64_t r0 = J.row0 + lane; r0 < J.row1; r0 += 32 * 8) {
      float v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) v[u] = r0 + 32 * u < J.row1 ? __ldcg(lg + r0 + 32 * u) : -INFINITY;
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int64_t r = r0 + 32 * u;
        if (r < J.row1 && better(v[u], int32_t(r), best, best_i)) best = v[u], best_i = int32_t(r);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int32_t oi = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (better(ov, oi, best, best_i)) best = ov, best_i = oi;
    }
    if (lane == 0) {
      if (best_i == INT32_MAX) best_i = int32_t(J.row0);  // every logit NaN: the CPU keeps row0 and -inf
      float* part = part0 + int64_t(b) * part_stride;
      part[0] = best;
      part[1] = __int_as_float(best_i);
    }
  }
  csync();
}

/// The operands of a deferred matmul tile (mm_defer), in the kernel's static
/// shared memory (SmemStatic::mm_args), written by thread 0. They used to live
/// in each thread's local memory, where the stage loop's input copies and the
/// epilogue reloaded them: with ~28 KiB of L1 beside 227 KiB of shared memory
/// those loads went to L2, a round trip before each stage's first copy
/// (docs/log/results.md, 2026-12-07).
struct MmTileArgs {
  Tile T;
  MatvecJob J;
  MmJob M;
  float* part;  // LmHead: the argmax partials (mm_argmax after the tile), or null
  int64_t part_stride;
};

/// A matmul tile the kernel runs itself after the task's body (mm_defer):
/// whether one is pending (every compute thread's own flag) and its operands.
struct MmCall {
  bool pending = false;
  MmTileArgs* args = nullptr;  // shared memory
};

/// The matmul tile of a task body (QkvProj, GateUp, MatvecResidual, LmHead
/// with `part`: then mm_argmax after it). With the Program's engine wgmma and a
/// kernel that runs deferred matmuls (R.mm), records it for mm_run_deferred and
/// returns true: ptxas keeps wgmma pipelined only in the kernel's own function
/// (in a called function it serialises every wgmma), so the one wgmma loop is
/// inlined at one place in the kernel, after the task dispatch. Otherwise runs
/// the mma.sync engine (mm_rows) here and returns false (mm_argmax is the caller's).
__device__ __forceinline__ bool mm_defer(const DevProgram& P, const Tile& T, RingView& R, const MatvecJob& J,
                                         const MmJob& M, float* work, float* part = nullptr, int64_t part_stride = 0) {
  if (R.mm && P.h.target.mm_engine == program::kMmEngineWgmma &&
      ((dev::smem_addr(work) + kMmRedBytes) & (program::kMmStageAlign - 1)) == 0) {
    MmCall& C = *R.mm;
    if (threadIdx.x == 0) {  // the same values in every thread; mm_run_deferred's barrier publishes them
      MmTileArgs& A = *C.args;
      A.T = T;
      A.J = J;
      A.M = M;
      A.part = part;
      A.part_stride = part_stride;
    }
    C.pending = true;
    return true;
  }
  mm_rows(P, T, R, J, M, work);
  return false;
}

/// The kernel, after each task's body: the matmul it deferred, if any.
__device__ __forceinline__ void mm_run_deferred(const DevProgram& P, RingView& R, MmCall& C, float* work) {
  if (!C.pending) return;
  C.pending = false;
  csync();  // thread 0's MmTileArgs visible to every compute thread
  const MmTileArgs& A = *C.args;
  mm_rows_wg(P, A.T, R, A.J, A.M, work);
  if (A.part) mm_argmax(P, A.J, A.M, A.part, A.part_stride);
}

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
