// The matvec engine of the norm-matvec and matvec opcodes (QkvProj, GateUp,
// MatvecResidual, LmHead): the normed input (rms_norm_act, with the norm
// weights prefetched before the task's wait), the ring consumer (ring_wait,
// ring_rows), the global-memory fallback (warp_dot) and one engine for the four
// opcodes (matvec_rows, the epilogue chosen by MatvecJob::kind), so the hot loop
// exists once in the kernel's code (instruction cache).
//
// Weights reach these opcodes through the CTA's shared-memory ring (DESIGN
// invariant 6): weight_tile() (program_tasks.cuh) says which bytes a task
// streams and in what pieces; the loader warp (program_kernel.cu) copies them
// in exactly that order, and matvec_rows() consumes them with ring_rows(). A
// task whose rows cannot be bulk-copied (segments not 16-byte aligned, a row
// larger than a stage, batch > 1) reads its weights from global memory through
// warp_dot() instead; both paths round identically.
#pragma once

#include "exec/cuda/program_tasks.cuh"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

/// The norm weight's operand slot, the same in every norm-matvec unit.
inline constexpr int kNormWSlot = ops::QkvProjOperands::kNormW;
static_assert(kNormWSlot == ops::GateUpOperands::kNormW && kNormWSlot == ops::LmHeadOperands::kNormW);

// ---- building blocks ---------------------------------------------------------

/// One warp: fp32 dot of weight row `row` (stored dtype, `cols` per row) over
/// columns [k0, k0 + n) with the bf16 shared-memory vector v[0 .. n). Every lane
/// gets the sum. (The fallback for tasks that do not stream through the ring.)
__device__ __noinline__ float warp_dot(const uint8_t* w, DType dt, int64_t row, int64_t cols, int64_t k0, int64_t n,
                          const uint16_t* v) {
  const int lane = threadIdx.x & 31;
  float acc = 0;
  if (dt == DType::BF16 || dt == DType::F16) {
    const uint16_t* r = reinterpret_cast<const uint16_t*>(w) + row * cols + k0;
    const bool bf = dt == DType::BF16;
    if (((k0 | n | cols) & 7) == 0 && (reinterpret_cast<uintptr_t>(w) & 15) == 0) {
      for (int64_t k = lane * 8; k < n; k += 256) {
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(r + k));
        const uint4 a = *reinterpret_cast<const uint4*>(v + k);
        const uint32_t wd[4] = {q.x, q.y, q.z, q.w}, ad[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint16_t lo = uint16_t(wd[j] & 0xffffu), hi = uint16_t(wd[j] >> 16);
          acc += (bf ? bf16_to_f32(lo) : f16_to_f32(lo)) * bits_f32(ad[j] << 16);
          acc += (bf ? bf16_to_f32(hi) : f16_to_f32(hi)) * bits_f32(ad[j] & 0xffff0000u);
        }
      }
      return dev::warp_sum(acc);
    }
    for (int64_t k = lane; k < n; k += 32) {
      const uint16_t e = __ldg(r + k);
      acc += (bf ? bf16_to_f32(e) : f16_to_f32(e)) * bf16_to_f32(v[k]);
    }
  } else {
    const float* r = reinterpret_cast<const float*>(w) + row * cols + k0;
    for (int64_t k = lane; k < n; k += 32) acc += __ldg(r + k) * bf16_to_f32(v[k]);
  }
  return dev::warp_sum(acc);
}

/// Where a norm-matvec task (QkvProj, GateUp, LmHead) finds its norm weights
/// in the work area, after the longest bf16 input vector; null when they do not
/// fit or cannot be bulk-copied (then they are read from global memory).
__device__ __forceinline__ const uint8_t* norm_smem(const DevProgram& P, const TaskDesc& t, float* smem) {
  const program::Opcode op = program::Opcode(t.opcode);
  if (P.work_bytes == 0 ||
      (op != program::Opcode::QkvProj && op != program::Opcode::GateUp && op != program::Opcode::LmHead) ||
      t.buf[kNormWSlot] < 0)  // an input normed by an RmsNorm task
    return nullptr;
  const ProgramHeader& h = P.h;
  int64_t vec = h.hidden > h.intermediate ? h.hidden : h.intermediate;
  if (int64_t(h.n_heads) * h.head_dim > vec) vec = int64_t(h.n_heads) * h.head_dim;
  const int64_t off = (2 * (vec + 8) + 127) / 128 * 128;
  const int64_t bytes = int64_t(h.hidden) * dtype_size(buf_dtype(P, t.buf[kNormWSlot]));
  if (off + bytes > int64_t(P.work_bytes) || bytes % 16 != 0 ||
      (reinterpret_cast<uintptr_t>(bp<const uint8_t>(P, t.buf[kNormWSlot])) & 15) != 0)
    return nullptr;
  return reinterpret_cast<const uint8_t*>(smem) + off;
}

/// Before a norm-matvec task's wait (all compute threads): its norm weights
/// (constants) into shared memory with cp.async; rms_norm_act waits for them.
__device__ void norm_prefetch(const DevProgram& P, const TaskDesc& t, float* smem) {
  const uint8_t* dst = norm_smem(P, t, smem);
  if (!dst) return;
  const uint8_t* src = bp<const uint8_t>(P, t.buf[kNormWSlot]);
  const int64_t n16 = int64_t(P.h.hidden) * dtype_size(buf_dtype(P, t.buf[kNormWSlot])) / 16;
  if (threadIdx.x >= kPrefetchFirst)
    for (int64_t k = int64_t(threadIdx.x) - kPrefetchFirst; k < n16; k += kThreads - kPrefetchFirst)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(dst + k * 16)), "l"(src + k * 16)
                   : "memory");
  asm volatile("cp.async.commit_group;" ::: "memory");
}

/// Element i of a weight vector stored as WD (known at compile time: one code path per dtype).
template <DType WD>
__device__ __forceinline__ float wload(const uint8_t* w, int64_t i) {
  if constexpr (WD == DType::F32) return reinterpret_cast<const float*>(w)[i];
  else if constexpr (WD == DType::BF16) return bf16_to_f32(reinterpret_cast<const uint16_t*>(w)[i]);
  else return f16_to_f32(reinterpret_cast<const uint16_t*>(w)[i]);
}

inline constexpr int kNormVec = 8;  // float4 per thread on the fast path: n <= 8192

/// The fast path's second half: act[q*4 .. q*4+4) = bf16(v * inv * w) for this thread's float4s.
template <DType WD>
__device__ __forceinline__ void norm_store(const float4 (&v)[kNormVec], float inv, const uint8_t* w, int64_t n,
                                           uint16_t* act) {
#pragma unroll
  for (int i = 0; i < kNormVec; ++i) {
    const int64_t q = threadIdx.x + int64_t(i) * kThreads;
    if (q * 4 < n) {
      const uint32_t o0 = f32_to_bf16(v[i].x * inv * wload<WD>(w, q * 4 + 0));
      const uint32_t o1 = f32_to_bf16(v[i].y * inv * wload<WD>(w, q * 4 + 1));
      const uint32_t o2 = f32_to_bf16(v[i].z * inv * wload<WD>(w, q * 4 + 2));
      const uint32_t o3 = f32_to_bf16(v[i].w * inv * wload<WD>(w, q * 4 + 3));
      reinterpret_cast<uint2*>(act)[q] = make_uint2(o0 | o1 << 16, o2 | o3 << 16);
    }
  }
}

/// act = bf16(x * rsqrt(mean(x^2) + eps) * w) into shared memory (bf16 bits).
/// x is read once with every load in flight (it lives in L2, written by other SMs).
/// Out of line and with one unrolled store loop per weight dtype: this runs
/// before every norm-matvec, and its code must stay small (instruction cache).
__device__ __noinline__ void rms_norm_act(const DevProgram& P, const float* x, int32_t w_buf, int64_t n, uint16_t* act,
                                          float* scratch, const uint8_t* w_smem = nullptr) {
  // The weights: prefetched into shared memory before the wait (norm_prefetch), or global.
  if (w_smem) asm volatile("cp.async.wait_all;" ::: "memory");  // block_sum's barrier publishes them
  const uint8_t* wp = w_smem ? w_smem : bp<const uint8_t>(P, w_buf);
  const DType wdt = buf_dtype(P, w_buf);
  if (n % 4 == 0 && n <= int64_t(kNormVec) * 4 * kThreads && (reinterpret_cast<uintptr_t>(x) & 15) == 0) {
    float4 v[kNormVec];
    float ss = 0;
#pragma unroll
    for (int i = 0; i < kNormVec; ++i) {
      const int64_t q = threadIdx.x + int64_t(i) * kThreads;
      v[i] = q * 4 < n ? __ldcg(reinterpret_cast<const float4*>(x) + q) : make_float4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kNormVec; ++i) ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
    ss = block_sum(ss, scratch);
    const float inv = 1.0f / sqrtf(ss / float(n) + P.h.rms_eps);
    if (wdt == DType::BF16) norm_store<DType::BF16>(v, inv, wp, n, act);
    else if (wdt == DType::F32) norm_store<DType::F32>(v, inv, wp, n, act);
    else norm_store<DType::F16>(v, inv, wp, n, act);
    csync();
    return;
  }
  float ss = 0;
#pragma unroll 1
  for (int64_t i = threadIdx.x; i < n; i += kThreads) ss += __ldcg(x + i) * __ldcg(x + i);
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / float(n) + P.h.rms_eps);
#pragma unroll 1
  for (int64_t i = threadIdx.x; i < n; i += kThreads)
    act[i] = f32_to_bf16(__ldcg(x + i) * inv * load_as_f32(wp, wdt, size_t(i)));
  csync();
}

/// act[0 .. n) = a[0 .. n) (bf16), 16-byte loads when aligned.
__device__ void copy_act(const uint16_t* a, int64_t n, uint16_t* act) {
  if (n % 8 == 0 && (reinterpret_cast<uintptr_t>(a) & 15) == 0) {
    for (int64_t q = threadIdx.x; q < n / 8; q += kThreads)
      reinterpret_cast<uint4*>(act)[q] = __ldcg(reinterpret_cast<const uint4*>(a) + q);
  } else {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) act[i] = __ldcg(a + i);
  }
  csync();
}


/// Waits for a stage to land. Gives up (false) when the kernel is aborting or
/// nothing arrived for the watchdog deadline (then raises the timeout error), so
/// a loader bug ends in the watchdog's report, never a silent hang.
__device__ __forceinline__ bool ring_wait_phase(const DevProgram& P, RingView& R, int slot, uint32_t parity) {
  if (dev::mbar_test_wait(&R.full[slot], parity)) return true;
  const uint64_t start = dev::globaltimer_ns();
  for (int spin = 0;; ++spin) {
    if (dev::mbar_test_wait(&R.full[slot], parity)) return true;
    if ((spin & 1023) == 1023) {
      if (*reinterpret_cast<volatile uint32_t*>(R.abort)) {
        cta_stop() = 1;
        return false;
      }
      if (dev::globaltimer_ns() - start > R.timeout_ns) {
        if ((threadIdx.x & 31) == 0) dev_fail(P, kErrTimeout, -1, -2 - slot);
        return false;
      }
    }
  }
}

/// ring_wait_phase for the stage R.seq lands in (`slot` = R.seq % n_stages).
__device__ __forceinline__ bool ring_wait(const DevProgram& P, RingView& R, int slot) {
  return ring_wait_phase(P, R, slot, (R.seq / uint32_t(R.n_stages)) & 1);
}

__device__ __forceinline__ float2 bf16x2_f2(uint32_t v) {
  return make_float2(bits_f32(v << 16), bits_f32(v & 0xffff0000u));
}
__device__ __forceinline__ float2 f16x2_f2(uint32_t v) { return __half22float2(*reinterpret_cast<const __half2*>(&v)); }

/// Partial dot of a row segment (stored as DT) in shared memory with act, over
/// 16-byte vectors v = v0, v0 + step, ... (eight independent FMA chains).
template <DType DT>
__device__ __forceinline__ float smem_dot(const char* row, uint32_t seg, const uint16_t* act, int v0, int step) {
  float c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
  const int nvec = int(seg / 16);
  if constexpr (DT == DType::F32) {
    const float4* wr = reinterpret_cast<const float4*>(row);
    const uint2* a = reinterpret_cast<const uint2*>(act);
#pragma unroll 1
    for (int v = v0; v < nvec; v += step) {
      const float4 w = wr[v];
      const uint2 av = a[v];
      const float2 a0 = bf16x2_f2(av.x), a1 = bf16x2_f2(av.y);
      c0 = fmaf(w.x, a0.x, c0);
      c1 = fmaf(w.y, a0.y, c1);
      c2 = fmaf(w.z, a1.x, c2);
      c3 = fmaf(w.w, a1.y, c3);
    }
  } else {
    const uint4* wr = reinterpret_cast<const uint4*>(row);
    const uint4* a = reinterpret_cast<const uint4*>(act);
    constexpr bool bf = DT == DType::BF16;
#pragma unroll 2
    for (int v = v0; v < nvec; v += step) {
      const uint4 wv = wr[v], av = a[v];
      const float2 w0 = bf ? bf16x2_f2(wv.x) : f16x2_f2(wv.x), w1 = bf ? bf16x2_f2(wv.y) : f16x2_f2(wv.y);
      const float2 w2 = bf ? bf16x2_f2(wv.z) : f16x2_f2(wv.z), w3 = bf ? bf16x2_f2(wv.w) : f16x2_f2(wv.w);
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
  return ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7));
}

/// What a matvec task (QkvProj, GateUp, MatvecResidual, LmHead) does with the
/// dot products of each of its rows, and where its weights are when they do not
/// come through the ring. One engine (matvec_rows) serves all four opcodes, so
/// the hot loop exists once in the kernel's code (instruction cache).
enum EpiKind : int32_t { kEpiQkv, kEpiGateUp, kEpiResidual, kEpiLogits };
struct MatvecJob {
  int32_t kind;
  int32_t bias0 = -1, bias1 = -1;  // bias buffers (GateUp: gate, up), or -1
  int64_t row0, row1;              // the task's output rows
  int64_t shift = 0;               // weight and bias row = output row - shift (QkvProj's part offset)
  void* out;                       // bf16 rows (QkvProj, GateUp) or fp32 (residual stream, logits)
  // weights in global memory (the path for tiles that cannot be bulk-copied)
  const uint8_t* w0 = nullptr;
  const uint8_t* w1 = nullptr;
  DType dt0 = DType::BF16, dt1 = DType::BF16;
  int64_t cols = 0, k0 = 0, K = 0;
  // LmHead: the best (value, row) this thread saw
  float best = -INFINITY;
  int32_t best_i = INT32_MAX;
};

__device__ __forceinline__ void apply_epi(const DevProgram& P, MatvecJob& J, int64_t r, float y0, float y1) {
  switch (J.kind) {
    case kEpiQkv:
      if (J.bias0 >= 0) y0 += load_f32(P, J.bias0, r - J.shift);
      static_cast<uint16_t*>(J.out)[r] = f32_to_bf16(y0);
      break;
    case kEpiGateUp:
      if (J.bias0 >= 0) y0 += load_f32(P, J.bias0, r);
      if (J.bias1 >= 0) y1 += load_f32(P, J.bias1, r);
      static_cast<uint16_t*>(J.out)[r] = f32_to_bf16(y0 / (1.0f + expf(-y0)) * y1);
      break;
    case kEpiResidual:
      // fp32 atomic (red.global.add) whether or not other tasks add to the same rows:
      // with a single writer it is the same one rounding as x += y, and it needs no read.
      if (J.bias0 >= 0) y0 += load_f32(P, J.bias0, r);
      atomicAdd(static_cast<float*>(J.out) + r, y0);
      break;
    default:
      static_cast<float*>(J.out)[r] = y0;
      if (better(y0, int32_t(r), J.best, J.best_i)) J.best = y0, J.best_i = int32_t(r);
  }
}

/// Streams the task's tile through the ring (weights stored as DT): every row r
/// of [0, T.rows) gets its epilogue from one thread. With at least kWarps rows
/// in a stage a warp takes whole rows; with fewer, kWarps / n warps share a row
/// (fixed-order combine).
template <DType DT>
__device__ __forceinline__ void ring_rows(const DevProgram& P, const Tile& T, const uint16_t* act, RingView& R,
                                          MatvecJob& J) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int parity = 0;
#pragma unroll 1
  for (int r0 = 0; r0 < T.rows; r0 += T.cap) {
    const int n = min(T.cap, T.rows - r0);
    const int slot = int(R.seq % uint32_t(R.n_stages));
    const char* stage = R.ring + size_t(slot) * R.stage_bytes;
    const bool timed = P.trace && threadIdx.x == 0 && r0 == 0;
    if (timed) R.t_prep = dev::globaltimer_ns();
    if (!ring_wait(P, R, slot)) return;  // aborting: the kernel leaves after this task
    if (timed) R.t_first = dev::globaltimer_ns();
    if (P.trace && threadIdx.x == 0 && r0 + T.cap >= T.rows) R.t_last = dev::globaltimer_ns();
    // wpr warps per row: 1 when the stage has at least kWarps rows (a warp walks
    // rows j, j + kWarps, ...), else kWarps / n sharing each row's vectors.
    const int wpr = n >= kWarps ? 1 : kWarps / n, part = warp % wpr;
#pragma unroll 1
    for (int j = warp / wpr; j < n; j += kWarps / wpr) {
      const char* row = stage + size_t(j) * T.seg;
      const float y0 = dev::warp_sum(smem_dot<DT>(row, T.seg, act, part * 32 + lane, 32 * wpr));
      const float y1 =
          T.nmat == 2 ? dev::warp_sum(smem_dot<DT>(row + size_t(n) * T.seg, T.seg, act, part * 32 + lane, 32 * wpr))
                      : 0.0f;
      if (lane == 0) {
        if (wpr == 1) apply_epi(P, J, J.row0 + r0 + j, y0, y1);
        else R.red[parity * 2 * kWarps + warp] = y0, R.red[parity * 2 * kWarps + kWarps + warp] = y1;
      }
    }
    __syncwarp();
    if (lane == 0) dev::mbar_arrive(&R.empty[slot]);
    if (wpr > 1) {
      csync();
      const float* red = R.red + parity * 2 * kWarps;
      if (warp / wpr < n && part == 0 && lane == 0) {
        float y0 = 0, y1 = 0;
        for (int k = 0; k < wpr; ++k) y0 += red[warp + k], y1 += red[kWarps + warp + k];
        apply_epi(P, J, J.row0 + r0 + warp / wpr, y0, y1);
      }
      parity ^= 1;  // the next stage writes the other half: one barrier per stage suffices
    }
    ++R.seq;
  }
}

/// The matvec of rows [J.row0, J.row1) with the bf16 input act: through the
/// ring when the task has a tile (T.cap > 0), else from global memory with
/// warp_dot (same rounding). Ends with a barrier.
__device__ void matvec_rows(const DevProgram& P, const Tile& T, const uint16_t* act, RingView& R,
                                         MatvecJob& J) {
  if (T.cap > 0) {
    if (DType(T.dt) == DType::BF16) ring_rows<DType::BF16>(P, T, act, R, J);
    else if (DType(T.dt) == DType::F32) ring_rows<DType::F32>(P, T, act, R, J);
    else ring_rows<DType::F16>(P, T, act, R, J);
  } else {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll 1
    for (int64_t r = J.row0 + warp; r < J.row1; r += kWarps) {
      const float y0 = warp_dot(J.w0, J.dt0, r - J.shift, J.cols, J.k0, J.K, act);
      const float y1 = J.w1 ? warp_dot(J.w1, J.dt1, r - J.shift, J.cols, J.k0, J.K, act) : 0.0f;
      if (lane == 0) apply_epi(P, J, r, y0, y1);
    }
  }
  csync();
}

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
