// The Hopper path of the matmul engine (mm.cuh): warpgroup MMA (wgmma, sm_90a)
// reads both operands straight from shared memory, so a stage costs a few
// descriptor updates per k-step instead of mma.sync's ldmatrix fragments.
//
// Operands, both K-major with the 128-byte swizzle (the layout the loader's
// TMA boxes already give the weights):
//  * A = the stage's weights: panel (matrix m, column group g) of T.cap rows x
//    128 bytes (program/smem_plan.h). wgmma's M is 64 rows; a block of fewer
//    rows (cap 16, 32, 48) reads the following bytes of shared memory as its
//    missing rows, whose results are dropped.
//  * B = the tokens' inputs: the compute warps copy column chunk c of the nb
//    input rows into a work-area buffer as kc / 64 panels of mm_tokens(batch)
//    rows x 128 bytes, 16-byte unit u of row b at unit u ^ (b % 8) (the same
//    swizzle), one stage ahead with cp.async.
// A descriptor names a panel's 1024-byte-aligned base (8 rows of 128 bytes
// = one swizzle repeat, the stride between 8-row groups); k-step j of a panel
// starts 32 bytes further (the hardware applies the swizzle to the address).
//
// Work split: the two warpgroups take the token groups (8 tokens) in two
// halves, each with all 64 rows (wgmma m64nNk16, N = 8 x its groups, fp32
// accumulators in registers: thread t of the warpgroup holds rows
// 16 (t / 32) + (t % 32) / 4 (+ 8) and tokens 8 j + 2 (t % 4) (+ 1), as
// mma.sync's m16n8 fragments); with one token group they split the panels
// and warpgroup 1 hands its partials over through shared memory. A tall
// block (one matrix, more than 64 rows: program::mm_max_rows) gives each
// warpgroup its own 64 rows and every token: tokens 0-31 and 32-63 as two
// wgmma into the registers GateUp's two matrices use. The wide variant
// (KEEL_MM_WIDE: tasks of up to 128 tokens) issues one wgmma as wide as a
// warpgroup's tokens instead, and stages a block's output in windows of
// tokens that fit the slot.
#pragma once

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

#ifndef KEEL_MM_WIDE
#define KEEL_MM_WIDE 0
#endif
/// The wide variant (program_kernel_wide.cu): tasks of up to
/// program::kMmWideMaxTokens tokens; a warpgroup's wgmma is as wide as its
/// tokens (rounded up: one matrix of a tall block to 64, else to 32), so
/// each weight panel is read from shared memory once for them all.
inline constexpr bool kWgWide = KEEL_MM_WIDE != 0;
static_assert(!kWgWide || KEEL_MM_WIDE == program::kMmWideMaxTokens);
inline constexpr int kWgMaxTokens = kWgWide ? KEEL_MM_WIDE : program::kMmMaxTokens;
inline constexpr int kWgMaxGroups = kWgMaxTokens / 8 / 2;  // token groups per warpgroup: 4, wide 8 (a tall block's: twice)
inline constexpr int kWgAcc = kWgMaxGroups * 4;            // fp32 accumulators per thread and matrix
/// Token groups of a warpgroup the fragment-layout epilogue serves (LmHead's
/// logits: at most kMmMaxTokens tokens, program::plan_stage; a task of one
/// token group); every other kind stages its output (mm_out_staged).
inline constexpr int kWgDirectGroups = program::kMmMaxTokens / 8;

/// A K-major operand with the 128-byte swizzle at shared address `addr`: 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr) {
  return (uint64_t(1) << 62) | (uint64_t(1024 >> 4) << 32) | uint64_t((addr & 0x3FFFFu) >> 4);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
/// This thread's generic-proxy shared-memory writes (cp.async included) become visible to wgmma's reads.
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

/// A warpgroup thread's fp32 accumulators: [0, kWgAcc) for a row block's
/// (first) matrix or tokens, [kWgAcc, 2 kWgAcc) for GateUp's up rows or a tall
/// block's tokens past 32. (One wgmma of N 64 into all of them made ptxas
/// serialise every wgmma of the kernel, C7511: two of N 32 at most.)
inline constexpr int kWgRegs = 2 * kWgAcc;

/// d[O .. O + N/2) (+)= A (64 x 16, descriptor da) * B (N x 16, descriptor db)^T; acc 0 overwrites.
template <int N>
struct WgMma;
#define KEEL_WG_D4(i) "+f"(d[O + (i)]), "+f"(d[O + (i) + 1]), "+f"(d[O + (i) + 2]), "+f"(d[O + (i) + 3])
#define KEEL_WG_MMA(N, REGS, A, B, PRED, ...)                                                                 \
  template <>                                                                                                \
  struct WgMma<N> {                                                                                          \
    template <int O>                                                                                         \
    static __device__ __forceinline__ void run(float (&d)[kWgRegs], uint64_t da, uint64_t db, int acc) {     \
      static_assert(O + N / 2 <= kWgRegs);                                                                   \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" PRED ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N     \
                   "k16.f32.bf16.bf16 {" REGS "}, %" A ", %" B ", p, 1, 1, 0, 0;\n}\n"                        \
                   : __VA_ARGS__                                                                             \
                   : "l"(da), "l"(db), "r"(acc));                                                            \
    }                                                                                                        \
  };
KEEL_WG_MMA(8, "%0, %1, %2, %3", "4", "5", "6", KEEL_WG_D4(0))
KEEL_WG_MMA(16, "%0, %1, %2, %3, %4, %5, %6, %7", "8", "9", "10", KEEL_WG_D4(0), KEEL_WG_D4(4))
KEEL_WG_MMA(24,
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11", "12", "13", "14",
            KEEL_WG_D4(0), KEEL_WG_D4(4), KEEL_WG_D4(8))
KEEL_WG_MMA(32,
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, "
            "%12, %13, %14, %15", "16", "17", "18",
            KEEL_WG_D4(0), KEEL_WG_D4(4), KEEL_WG_D4(8), KEEL_WG_D4(12))
// The wide variant's widths (a warpgroup's tokens of one matrix up to 128, of each of two up to 64).
KEEL_WG_MMA(64,
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31", "32", "33", "34",
            KEEL_WG_D4(0), KEEL_WG_D4(4), KEEL_WG_D4(8), KEEL_WG_D4(12), KEEL_WG_D4(16), KEEL_WG_D4(20),
            KEEL_WG_D4(24), KEEL_WG_D4(28))
KEEL_WG_MMA(128,
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63", "64", "65", "66",
            KEEL_WG_D4(0), KEEL_WG_D4(4), KEEL_WG_D4(8), KEEL_WG_D4(12), KEEL_WG_D4(16), KEEL_WG_D4(20),
            KEEL_WG_D4(24), KEEL_WG_D4(28), KEEL_WG_D4(32), KEEL_WG_D4(36), KEEL_WG_D4(40), KEEL_WG_D4(44),
            KEEL_WG_D4(48), KEEL_WG_D4(52), KEEL_WG_D4(56), KEEL_WG_D4(60))
#undef KEEL_WG_MMA
#undef KEEL_WG_D4

/// One stage's k-steps of a warpgroup: panels p0, p0 + pstep, ... < np, four
/// k-steps of 16 columns each, against G token groups (more than 4: a tall
/// block's); TWO: GateUp's up rows (a_mat1 bytes after the gate rows) into
/// d[kWgAcc ..) with the same B. `acc` 0: the first k-step overwrites
/// the accumulators (a row block's first stage); the stage leaves it 1 once it
/// issued one.
template <int G, bool TWO>
__device__ __forceinline__ void wg_stage(float (&d)[kWgRegs], uint32_t a, uint32_t a_panel,
                                         uint32_t a_mat1, uint32_t b, uint32_t b_panel, int p0, int pstep, int np,
                                         int& acc) {
  wg_fence();
#pragma unroll 1
  for (int p = p0; p < np; p += pstep) {
    const uint64_t da = wg_desc(a + uint32_t(p) * a_panel), db = wg_desc(b + uint32_t(p) * b_panel);
    const uint64_t da1 = wg_desc(a + a_mat1 + uint32_t(p) * a_panel);
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // 32 bytes = 16 columns a k-step: +2 in the descriptor's address field
      if constexpr (G > kWgMaxGroups && !kWgWide) {  // a tall block's tokens 32 .. 8 G into the second half (4 KiB further in B)
        WgMma<kWgMaxGroups * 8>::template run<0>(d, da + 2 * j, db + 2 * j, acc);
        WgMma<(G - kWgMaxGroups) * 8>::template run<kWgAcc>(d, da + 2 * j, db + 2 * j + kWgMaxGroups * 8 * 8, acc);
      } else {
        WgMma<G * 8>::template run<0>(d, da + 2 * j, db + 2 * j, acc);
        if constexpr (TWO) WgMma<G * 8>::template run<kWgAcc>(d, da1 + 2 * j, db + 2 * j, acc);
      }
      acc = 1;
    }
  }
  wg_commit();
  wg_wait_all();
}

/// Issues the cp.async copies of column chunk `c` (kc columns) of the nb input
/// rows into the swizzled panels at `buf` (tp rows a panel); the caller commits.
__device__ __forceinline__ void mm_fill_swizzled(const MmJob& M, const MmFillIdx& F, int c, int kc, int tp,
                                                 uint16_t* buf) {
  const uint16_t* a = M.a + int64_t(c) * kc;
  for (int b = F.b0, q = F.q0; b < M.nb;) {
    uint16_t* to = buf + (q >> 3) * tp * 64 + b * 64 + (((q & 7) ^ (b & 7)) << 3);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(to)), "l"(a + int64_t(b) * M.lda + q * 8)
                 : "memory");
    b += F.db, q += F.dq;
    if (q >= F.per_row) q -= F.per_row, ++b;
  }
}

/// The epilogue of a row block through shared memory (every kind but
/// LmHead's logits): each thread writes its accumulators into `o`
/// ([token][row], `pitch` floats a token, the 4-row groups of token b xor-ed
/// by 8 ((b / 2) % 4) so the m64 fragments' writes hit 32 banks; GateUp's up
/// rows a `plane` of floats further), then each thread takes 8 consecutive
/// rows of one token: a residual adds them into x with two 16-byte reds (the
/// bias of the first k-slice added first), QkvProj and GateUp store their 8
/// bf16 outputs (bias, SiLU(gate) * up) with one 16-byte store. The fragment
/// layout gave scattered 4-byte atomics and 2-byte stores, and 32 unrolled
/// copies of the epilogue's code (its "after" time in the trace of a
/// batch-64 step: 4.5 / 5.4 us for down_proj / o_proj, which stage, 9.4 /
/// 15.7 for qkv / gate_up, which did not). `rows0`: the block's first row in
/// the tile; `r_wg`: this warpgroup's first row in the block. WIN (the wide
/// variant, whose block may not fit the slot at once): only the tokens [t0,
/// t0 + tw) (t0 a multiple of 8), the caller passing over the block's tokens
/// window by window. Starts and ends with a barrier, after which the caller
/// may release the slot.
template <bool WIN>
__device__ __forceinline__ void mm_out_staged(const DevProgram& P, const MatvecJob& J, const MmJob& M, float* o,
                                              int pitch, int plane, bool two, int rows0, int cap,
                                              const float (&d)[kWgRegs], int r_wg, int wi, int g, int tq, int g0,
                                              int ng, int t0 = 0, int tw = 0) {
  csync();  // the other warpgroup's wgmma may still read this slot's weights (or the last window's stores this slot)
#pragma unroll
  for (int j = 0; j < 2 * kWgMaxGroups; ++j) {
    if (j < ng) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rr = r_wg + wi * 16 + g + (e >= 2 ? 8 : 0), bt = (g0 + j) * 8 + 2 * tq + (e & 1) - (WIN ? t0 : 0);
        const int at = bt * pitch + (rr ^ (((bt >> 1) & 3) << 3));  // (the xor stays below pitch)
        if (rr < cap && (!WIN || unsigned(bt) < unsigned(tw))) {
          o[at] = d[4 * j + e];
          if (j < kWgMaxGroups && two) o[plane + at] = d[kWgAcc + 4 * j + e];  // GateUp's up rows
        }
      }
    }
  }
  csync();
  const int n8 = (cap + 7) / 8;
  const int nbw = WIN ? min(M.nb - t0, tw) : M.nb;
  for (int i = int(threadIdx.x); i < nbw * n8; i += kThreads) {
    const int lt = i / n8, bt = lt + (WIN ? t0 : 0), r0 = (i % n8) * 8;
    const float* src = o + lt * pitch + (r0 ^ (((lt >> 1) & 3) << 3));  // rows r0 .. r0 + 7 stay contiguous
    float v[8], u[8];
    *reinterpret_cast<float4*>(v) = *reinterpret_cast<const float4*>(src);
    *reinterpret_cast<float4*>(v + 4) = *reinterpret_cast<const float4*>(src + 4);
    if (two) {
      *reinterpret_cast<float4*>(u) = *reinterpret_cast<const float4*>(src + plane);
      *reinterpret_cast<float4*>(u + 4) = *reinterpret_cast<const float4*>(src + plane + 4);
    }
    const int64_t r = J.row0 + rows0 + r0;
    const int64_t at = int64_t(bt) * M.ldo + r;
    const bool whole = r + 7 < J.row1 && r0 + 7 < cap;
    if (J.kind == kEpiResidual) {
      float* x = static_cast<float*>(M.out) + at;
      if (whole && (reinterpret_cast<uintptr_t>(x) & 15) == 0) {
        if (J.bias0 >= 0)
#pragma unroll
          for (int k = 0; k < 8; ++k) v[k] += load_f32(P, J.bias0, r + k);
        asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(x), "f"(v[0]), "f"(v[1]), "f"(v[2]),
                     "f"(v[3])
                     : "memory");
        asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(x + 4), "f"(v[4]), "f"(v[5]), "f"(v[6]),
                     "f"(v[7])
                     : "memory");
        continue;
      }
    } else {
      uint16_t* y = static_cast<uint16_t*>(M.out) + at;
      if (whole && (reinterpret_cast<uintptr_t>(y) & 15) == 0) {
        uint32_t w[4];
#pragma unroll
        for (int k = 0; k < 8; k += 2) {
          float y0 = v[k], y1 = v[k + 1];
          if (J.kind == kEpiQkv) {
            if (J.bias0 >= 0) y0 += load_f32(P, J.bias0, r + k - J.shift), y1 += load_f32(P, J.bias0, r + k + 1 - J.shift);
          } else {  // GateUp
            float g0v = y0, g1v = y1, u0 = u[k], u1 = u[k + 1];
            if (J.bias0 >= 0) g0v += load_f32(P, J.bias0, r + k), g1v += load_f32(P, J.bias0, r + k + 1);
            if (J.bias1 >= 0) u0 += load_f32(P, J.bias1, r + k), u1 += load_f32(P, J.bias1, r + k + 1);
            y0 = g0v / (1.0f + expf(-g0v)) * u0;
            y1 = g1v / (1.0f + expf(-g1v)) * u1;
          }
          w[k / 2] = uint32_t(f32_to_bf16(y0)) | uint32_t(f32_to_bf16(y1)) << 16;
        }
        *reinterpret_cast<uint4*>(y) = make_uint4(w[0], w[1], w[2], w[3]);
        continue;
      }
    }
    for (int k = 0; k < 8 && r + k < J.row1 && r0 + k < cap; ++k) mm_epi(P, J, M, r + k, bt, v[k], two ? u[k] : 0.0f);
  }
  fence_proxy_async_smem();  // these generic accesses before the loader's next copy into the slot
  csync();
}

/// v as lane 0 of the warp has it: the compiler then treats it as warp-uniform.
__device__ __forceinline__ int warp_uniform(int v) { return __shfl_sync(0xffffffffu, v, 0); }

/// mm_rows (mm.cuh) on wgmma: the same ring, stages, epilogue and trace points.
/// Inlined into the kernel function only (mm_run_deferred): see mm_defer.
__device__ __forceinline__ void mm_rows_wg(const DevProgram& P, const Tile& T, RingView& R, const MatvecJob& J,
                                        const MmJob& M, float* work) {
  // The warp index through a shuffle: the compiler then knows every choice
  // below is the same across a warp (and the warpgroup), so it does not
  // serialise the wgmma for a divergent path.
  const int warp = warp_uniform(int(threadIdx.x >> 5)), lane = threadIdx.x & 31;
  const int wg = warp >> 2, wi = warp & 3;
  // Loop bounds and the dispatch through warp_uniform too: values read through
  // this function's reference parameters are per-thread to the compiler.
  const int kc = int(T.seg / 2), nk = warp_uniform(int(J.K / kc)), cap = warp_uniform(T.cap);
  const int rows = int(T.rows), nrb = (rows + cap - 1) / cap, nst = warp_uniform(nrb * nk);
  const int ntg = warp_uniform((M.nb + 7) / 8);
  const bool tall = cap > int(program::kMmRows);  // warpgroup wg: rows [64 wg, 64 wg + 64), every token
  const bool ksplit = !tall && ntg == 1;          // one token group: the warpgroups split the panels
  // Token groups of warpgroup 0 when they split them (the wide variant: a
  // multiple of 4, so both warpgroups' rounded widths stay inside tp rows).
  const int h = kWgWide ? ((ntg + 1) / 2 + 3) / 4 * 4 : (ntg + 1) / 2;
  const int g0 = tall || ksplit || wg == 0 ? 0 : h;                  // this warpgroup's first token group
  const int ng_mine = tall ? ntg : ksplit ? 1 : wg == 0 ? min(h, ntg) : max(ntg - h, 0);  // and how many (0: none)
  const int tp = program::mm_tile_tokens(P.h);            // rows of an input panel
  const int np = warp_uniform(kc / program::kMmBoxCols);   // panels a stage
  const uint32_t a_panel = uint32_t(cap) * (program::kMmBoxCols * 2);
  const uint32_t a_mat1 = uint32_t(np) * a_panel;
  const uint32_t a_wg = tall ? uint32_t(wg) * 64u * (program::kMmBoxCols * 2) : 0u;  // this warpgroup's rows in a panel
  const uint32_t b_panel = uint32_t(tp) * (program::kMmBoxCols * 2);
  float* red = work;
  uint16_t* bufs = reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(work) + kMmRedBytes);
  // Buffer slots of tp x max cols (no padding: the swizzle spreads the banks),
  // 1024-byte multiples: tp is a multiple of 8 and a panel row is 128 bytes.
  const size_t buf_elems = size_t(tp) * program::mm_stage_cols(P.h);
  const int na = max(2, min(kMmMaxSlots, int((P.work_bytes - kMmRedBytes) / (buf_elems * 2))));
  const int p0 = ksplit ? wg : 0, pstep = ksplit ? 2 : 1;
  // wg_stage's instance: the wide variant's widths are rounded up (a tall
  // block's to 64 tokens: 12, 13; else to 32: 14 + 2 (0, 1) + two; one token
  // group: as below); tokens past the task's only make columns the epilogue
  // drops.
  const int kind = ng_mine == 0             ? -1
                   : kWgWide && tall        ? 12 + (ng_mine + 7) / 8 - 1
                   : kWgWide && ng_mine > 1 ? 14 + 2 * ((ng_mine + 3) / 4 - 1) + (T.nmat == 2 ? 1 : 0)
                   : ng_mine > kWgMaxGroups ? 8 + ng_mine - kWgMaxGroups - 1  // tall, N over 32
                                            : (T.nmat == 2 ? 1 : 0) + 2 * (ng_mine - 1);
  const int g = lane >> 2, tq = lane & 3;

  float d[kWgRegs];  // written by the row block's first k-step (acc = 0)
  const int out_pitch = (cap + 31) / 32 * 32;
  // Every kind but LmHead's logits stages its output (mm_out_staged) through
  // a block's last stage slot, when it fits (GateUp: both matrices' rows).
  const bool two = T.nmat == 2;
  const int out_plane = tp * out_pitch;
  // The wide variant stages windows of tw tokens (a multiple of 8) where the block's tokens do not fit at once.
  const int tw = kWgWide ? min(tp, int(R.stage_bytes / (size_t(two ? 2 : 1) * out_pitch * 4)) / 8 * 8) : tp;
  const bool stage_out = warp_uniform(J.kind != kEpiLogits && !ksplit &&
                                      (kWgWide ? tw >= 8 : size_t(two ? 2 : 1) * out_plane * 4 <= R.stage_bytes)) != 0;
  if (kWgWide && !stage_out && ntg > kWgDirectGroups) {  // (program::plan_stage never makes one)
    if (threadIdx.x == 0) dev_fail(P, kErrMmTile, -1, M.nb);
    return;  // the kernel leaves after this task
  }
  int acc = 0;

  const MmFillIdx F(kc);
  int use_buf = 0, rb = 0, c = 0;
  MmRingPos G(R);
  MmInputs in([&](int chunk, int buf) { mm_fill_swizzled(M, F, chunk, kc, tp, bufs + size_t(buf) * buf_elems); }, nk,
              na, nst);
#if !KEEL_DIAG_MM
  if (P.trace && threadIdx.x == 0) R.t_prep = dev::globaltimer_ns();  // the stage loop's start: setup done
#endif
  in.prime();
#if KEEL_DIAG_MM
  // Diagnostic builds only (KEEL_DIAG_MM defined before the variant includes
  // program_kernel.cu): thread 0 sums over the task's stages the time waiting
  // for the input chunk (and the barrier), for the weights, and in the wgmma
  // (issue to done); the trace's prep_us / stage_us / stream_us carry them and
  // after_us the rest (setup, epilogues, releases). docs/log/results.md, 2026-12-07.
  uint64_t dg_t = 0, dg_b = 0, dg_w = 0, dg_m = 0;
#endif
#pragma unroll 1
  for (int s = 0; s < nst; ++s) {
#if KEEL_DIAG_MM
    if (P.trace && threadIdx.x == 0) dg_t = dev::globaltimer_ns();
#endif
    in.wait();
    fence_proxy_async_smem();  // chunk s, as this thread copied it, visible to wgmma
    csync();  // chunk s landed for every thread; every warpgroup is done with chunk s - 1's buffer
    in.refill(s);
    const char* stage = G.at(G.slot);
#if KEEL_DIAG_MM
    uint64_t dg_1 = 0;
    if (P.trace && threadIdx.x == 0) dg_1 = dev::globaltimer_ns(), dg_b += dg_1 - dg_t;
#endif
    const bool landed = dev::mbar_test_wait(G.full + G.slot, G.phase) || ring_wait_phase(P, R, G.slot, G.phase);
    if (__any_sync(0xffffffffu, !landed)) {  // a warp-uniform exit: the wgmma below stay on a uniform path
      R.seq = G.seq0 + uint32_t(s);
      asm volatile("cp.async.wait_all;" ::: "memory");
      return;  // aborting: the kernel leaves after this task
    }
#if KEEL_DIAG_MM
    if (P.trace && threadIdx.x == 0) dg_t = dev::globaltimer_ns(), dg_w += dg_t - dg_1;
#else
    if (P.trace && threadIdx.x == 0) {
      if (s == 0) R.t_first = dev::globaltimer_ns();  // the first stage's input chunk and weights in
      if (s + 1 == nst) R.t_last = dev::globaltimer_ns();
    }
#endif
    const uint32_t a = dev::smem_addr(stage) + a_wg;
    const uint32_t b = dev::smem_addr(bufs + size_t(use_buf) * buf_elems) + uint32_t(g0 * 8) * 128u;
    if (++use_buf == na) use_buf = 0;
    switch (kind) {
      case 0: wg_stage<1, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 1: wg_stage<1, true>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
#if !KEEL_MM_WIDE
      case 2: wg_stage<2, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 3: wg_stage<2, true>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 4: wg_stage<3, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 5: wg_stage<3, true>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 6: wg_stage<4, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 7: wg_stage<4, true>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 8: wg_stage<5, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 9: wg_stage<6, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 10: wg_stage<7, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 11: wg_stage<8, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
#else
      case 12: wg_stage<8, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 13: wg_stage<16, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 14: wg_stage<4, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 15: wg_stage<4, true>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 16: wg_stage<8, false>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
      case 17: wg_stage<8, true>(d, a, a_panel, a_mat1, b, b_panel, p0, pstep, np, acc); break;
#endif
      default: break;
    }
#if KEEL_DIAG_MM
    if (P.trace && threadIdx.x == 0) dg_m += dev::globaltimer_ns() - dg_t;
#endif
    const int used = G.slot;
    const bool keep = stage_out && c + 1 == nk;  // the block's last stage: its slot stages the output
    if (!keep) {
      __syncwarp();
      if (lane == 0) dev::mbar_arrive(G.empty + G.slot);
    }
    G.advance();
    if (++c < nk) continue;
    c = 0;
    if (keep) {  // through the slot as [token][row], then 16-byte reds or stores
      float* o = reinterpret_cast<float*>(G.at(used));
      if constexpr (kWgWide) {
#pragma unroll 1
        for (int t0 = 0; t0 < M.nb; t0 += tw)
          mm_out_staged<true>(P, J, M, o, out_pitch, tw * out_pitch, two, rb * cap, cap, d, tall ? wg * 64 : 0, wi, g,
                              tq, g0, ng_mine, t0, tw);
      } else {
        mm_out_staged<false>(P, J, M, o, out_pitch, out_plane, two, rb * cap, cap, d, tall ? wg * 64 : 0, wi, g, tq,
                             g0, ng_mine);
      }
      __syncwarp();
      if (lane == 0) dev::mbar_arrive(G.empty + used);
      acc = 0;
      ++rb;
      continue;
    }
    // The row block's epilogue. (The accumulators are only read here: a
    // non-wgmma write to them would make ptxas serialise the wgmma.)
    const bool handed = ksplit && np > 1;  // warpgroup 1's partials to add (np == 1: it had no panel)
    if (handed) {
      if (wg == 1)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          red[(0 * 128 + threadIdx.x - 128) * 4 + e] = d[e];
          red[(1 * 128 + threadIdx.x - 128) * 4 + e] = d[kWgAcc + e];
        }
      csync();
    }
    if (ng_mine > 0 && (!ksplit || wg == 0)) {
#pragma unroll
      for (int j = 0; j < kWgDirectGroups; ++j) {  // groups past kWgMaxGroups: a tall block's
        if (j < ng_mine) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int rr = (tall ? wg * 64 : 0) + wi * 16 + g + (e >= 2 ? 8 : 0);
            const int64_t r = J.row0 + int64_t(rb) * cap + rr;
            const int bt = (g0 + j) * 8 + 2 * tq + (e & 1);
            float y0 = d[4 * j + e];
            float y1 = j < kWgMaxGroups ? d[kWgAcc + 4 * j + e] : 0.0f;  // GateUp's up rows (a tall block: one matrix)
            if (handed) y0 += red[(0 * 128 + threadIdx.x) * 4 + e], y1 += red[(1 * 128 + threadIdx.x) * 4 + e];
            if (rr < cap && r < J.row1 && bt < M.nb) mm_epi(P, J, M, r, bt, y0, y1);
          }
        }
      }
    }
    acc = 0;
    ++rb;
  }
  R.seq = G.seq0 + uint32_t(nst);
#if KEEL_DIAG_MM
  if (P.trace && threadIdx.x == 0) {
    R.t_prep = R.dg_waited + dg_b;
    R.t_first = R.t_prep + dg_w;
    R.t_last = R.t_first + dg_m;
  }
#endif
  csync();
}

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
