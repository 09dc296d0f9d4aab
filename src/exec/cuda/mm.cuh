// The matmul engine of the matvec opcodes when a task serves several
// sequences (QkvProj, GateUp, MatvecResidual, LmHead with stage_cols() > 0):
// each weight tile streams through the ring once per step, whatever the batch,
// and tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate) multiply it
// with every sequence's input.
//
// Per stage the ring holds stage_rows() (<= 64) rows x kc = stage_cols() columns of each matrix
// as TMA panels of 64 columns with the 128-byte swizzle (program/smem_plan.h,
// program_kernel.cu loader_chunks); the compute warps copy the same kc columns
// of the sequences' bf16 inputs (normed rows of an RmsNorm task, or the
// attention output / MLP hidden) into one of two work-area buffers with
// cp.async, one stage ahead. The weights are mma's A operand (16 rows per
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

/// Issues the cp.async copies of column chunk `c` (kc columns) of the nb input
/// rows into `buf` (row pitch kc + 8 elements); the caller commits the group.
__device__ __forceinline__ void mm_fill(const MmJob& M, int c, int kc, uint16_t* buf) {
  const int per_row = kc / 8;  // 16-byte pieces
  const int pitch = kc + 8;
  for (int i = threadIdx.x; i < M.nb * per_row; i += kThreads) {
    const int b = i / per_row, q = i % per_row;
    const uint16_t* src = M.a + int64_t(b) * M.lda + int64_t(c) * kc + q * 8;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(buf + b * pitch + q * 8)), "l"(src)
                 : "memory");
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

/// Loads the fragments at A address `a` (second matrix at a + a_mat1) and B
/// address `b` of token group tg0 (the warp's j-th group: tg0 + j * tg_step,
/// each 8 rows of `apitch` elements further).
__device__ __forceinline__ void mm_load(MmFrag& f, uint32_t a, uint32_t a_mat1, bool two, uint32_t b, int ntile,
                                        int tg0, int tg_step, int apitch) {
  ldmatrix_x4(f.a0, a);
  if (two) ldmatrix_x4(f.a1, a + a_mat1);
#pragma unroll
  for (int j = 0; j < kMmMaxTilesPerWarp; ++j)
    if (j < ntile) ldmatrix_x2(f.b[j][0], f.b[j][1], b + uint32_t((tg0 + j * tg_step) * 8 * apitch) * 2);
}

__device__ __forceinline__ void mm_mma(float (&acc)[kMmMaxTilesPerWarp][2][4], const MmFrag& f, bool two, int ntile) {
#pragma unroll
  for (int j = 0; j < kMmMaxTilesPerWarp; ++j) {
    if (j < ntile) {
      mma_bf16(acc[j][0], f.a0, f.b[j][0], f.b[j][1]);
      if (two) mma_bf16(acc[j][1], f.a1, f.b[j][0], f.b[j][1]);
    }
  }
}

/// The matmul of rows [J.row0, J.row1) of tile T (a matmul tile: T.seg is one
/// column chunk, J.K / chunk of them per row block) with the nb input rows of
/// M, through the ring. `work` is the work area: the split-warp partials, then
/// as many input buffers as fit (2 .. kMmMaxSlots; program::mm_work_bytes
/// guarantees 2), filled that many - 1 chunks ahead. Ends with a barrier.
__device__ __noinline__ void mm_rows(const DevProgram& P, const Tile& T, RingView& R, const MatvecJob& J,
                                     const MmJob& M, float* work) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int kc = int(T.seg / 2), nk = int(J.K / kc), cap = T.cap;
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
  const size_t buf_elems = size_t(tokens_max) * (program::mm_max_cols(P.h.batch) + 8);
  const int na = max(2, min(kMmMaxSlots, int((P.work_bytes - kMmRedBytes) / (buf_elems * 2))));
  // This warp's token groups: tg = half + 2j (split 1), or the one group (split 2).
  const int ntile = split == 2 ? 1 : (ntg - half + 1) / 2;
  const int g = lane >> 2, tq = lane & 3;

  float acc[kMmMaxTilesPerWarp][2][4];
  mm_zero(acc);

  // One commit group per stage (empty past the end), so "stage s landed" is
  // always "at most na - 2 groups pending".
  for (int q = 0; q < na - 1; ++q) {
    if (q < nst) mm_fill(M, q % nk, kc, bufs + size_t(q) * buf_elems);
    asm volatile("cp.async.commit_group;" ::: "memory");
  }
#pragma unroll 1
  for (int s = 0; s < nst; ++s) {
    const int rb = s / nk, c = s % nk;
    cp_async_wait_pending(na - 2);
    csync();  // chunk s landed for every thread; every warp is done with chunk s - 1's buffer
    {
      const int q = s + na - 1;  // into the buffer chunk s - 1 used
      if (q < nst) mm_fill(M, q % nk, kc, bufs + size_t(q % na) * buf_elems);
      asm volatile("cp.async.commit_group;" ::: "memory");
    }
    const int slot = int(R.seq % uint32_t(R.n_stages));
    const char* stage = R.ring + size_t(slot) * R.stage_bytes;
    if (P.trace && threadIdx.x == 0 && s == 0) R.t_prep = R.t_first = dev::globaltimer_ns();
    if (!ring_wait(P, R, slot)) {
      asm volatile("cp.async.wait_all;" ::: "memory");
      return;  // aborting: the kernel leaves after this task
    }
    if (P.trace && threadIdx.x == 0 && s + 1 == nst) R.t_last = dev::globaltimer_ns();
    const uint16_t* buf = bufs + size_t(s % na) * buf_elems;
    // A fragments: rows rg*16 + (lane % 16), columns +8 for lanes 16..31.
    const int ar = rg * 16 + (lane & 15);
    const uint32_t a_row = dev::smem_addr(stage) + uint32_t(ar) * (program::kMmBoxCols * 2);
    const uint32_t a_mat1 = uint32_t(ng) * panel;  // the second matrix (GateUp's up rows)
    // B fragments: sequence tg*8 + (lane % 8), columns +8 for lanes 8..15.
    const uint32_t b_addr = dev::smem_addr(buf) + uint32_t((lane & 7) * apitch + ((lane >> 3) & 1) * 8) * 2;
    // k-steps ks0, ks0 + split, ... (an even count: kc is a multiple of 64),
    // two at a time, the next one's fragments loaded before this one's mma.
    if (rg < nrg) {
      const int nks = kc / 16, ks0 = split == 2 ? half : 0;
      const int tg0 = split == 2 ? 0 : half, tg_step = split == 2 ? 0 : 2;
      auto a_at = [&](int ks) {
        return a_row + uint32_t(ks >> 2) * panel + ((((ks & 3) << 1 | (lane >> 4)) ^ (ar & 7)) << 4);
      };
      MmFrag f0, f1;
      mm_load(f0, a_at(ks0), a_mat1, T.nmat == 2, b_addr + ks0 * 32, ntile, tg0, tg_step, apitch);
#pragma unroll 1
      for (int ks = ks0; ks < nks; ks += 2 * split) {
        mm_load(f1, a_at(ks + split), a_mat1, T.nmat == 2, b_addr + (ks + split) * 32, ntile, tg0, tg_step, apitch);
        mm_mma(acc, f0, T.nmat == 2, ntile);
        if (ks + 2 * split < nks)
          mm_load(f0, a_at(ks + 2 * split), a_mat1, T.nmat == 2, b_addr + (ks + 2 * split) * 32, ntile, tg0, tg_step,
                  apitch);
        mm_mma(acc, f1, T.nmat == 2, ntile);
      }
    }
    __syncwarp();
    if (lane == 0) dev::mbar_arrive(&R.empty[slot]);
    ++R.seq;
    if (c + 1 < nk) continue;
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
  }
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
    for (int64_t r = J.row0 + lane; r < J.row1; r += 32) {
      const float v = __ldcg(lg + r);
      if (better(v, int32_t(r), best, best_i)) best = v, best_i = int32_t(r);
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

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
