// Device implementations of the Program's opcodes (program/program.h,
// kOpcodeTable), one __device__ function per opcode, named like its CPU twin in
// src/exec/cpu/tasks.cpp and rounding at the same points: bf16 normed inputs,
// raw q/k/v rows, q after its epilogue, K/V, attention output and MLP hidden;
// fp32 residual stream, accumulation, head norm, RoPE, softmax and logits;
// weights as stored (f32 / f16 / bf16). A task runs on one whole CTA of
// kThreads threads; it reads only its TaskDesc (copied to shared memory by the
// caller) and the buffers it names through DevProgram::ptr. The only
// differences from the CPU are summation order and libm ulps.
//
// Weights reach the matvec opcodes (QkvProj, GateUp, MatvecResidual, LmHead)
// through the CTA's shared-memory ring (DESIGN invariant 6): weight_tile() says
// which bytes a task streams and in what pieces; the loader warp
// (program_kernel.cu) copies them in exactly that order, and matvec_rows() (one
// engine for the four opcodes, the epilogue chosen by MatvecJob::kind) consumes
// them with ring_rows(). A task whose rows cannot be bulk-copied (segments not
// 16-byte aligned, a row larger than a stage, batch > 1) reads its weights from
// global memory through warp_dot() instead; both paths round identically.
// Tasks run on the kThreads compute threads only: barriers are csync() (named
// barrier 1), never __syncthreads(), because the loader and signaller warps do
// not join. Hot-path helpers stay inlined: an out-of-line call keeps its frame in
// local memory, which measured 13-40% slower (docs/cuda-executor.md).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "program/program.h"
#include "program/rules.h"
#include "core/dtype.h"
#include "exec/cuda/primitives.cuh"
#include "exec/cuda/program_kernel.h"

namespace keel::exec::cuda::prog {

using program::Control;
using program::ProgramHeader;
using program::SeqState;
using program::TaskDesc;

inline constexpr int kWarps = kThreads / 32;

/// Barrier of the compute warps (the loader warp never joins).
__device__ __forceinline__ void csync() { asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory"); }

/// Device twins of program::qkv_width / qkv_part_begin (host-only there).
__device__ __forceinline__ int64_t qkv_w(const ProgramHeader& h) {
  return (int64_t(h.n_heads) + 2 * int64_t(h.n_kv_heads)) * h.head_dim;
}
__device__ __forceinline__ int64_t qkv_begin(const ProgramHeader& h, int part) {
  return (part == 0 ? 0 : part == 1 ? int64_t(h.n_heads) : int64_t(h.n_heads) + h.n_kv_heads) * h.head_dim;
}

template <class T>
__device__ __forceinline__ T* bp(const DevProgram& P, int32_t buf) {
  // The buffer table is constant for the launch: the read-only path keeps it in L1.
  return reinterpret_cast<T*>(__ldg(reinterpret_cast<const unsigned long long*>(P.ptr) + buf));
}

__device__ __forceinline__ DType buf_dtype(const DevProgram& P, int32_t buf) { return DType(__ldg(P.dtype + buf)); }

__device__ __forceinline__ float load_f32(const DevProgram& P, int32_t buf, int64_t i) {
  const uint8_t* p = bp<const uint8_t>(P, buf);
  switch (buf_dtype(P, buf)) {
    case DType::F32: return reinterpret_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
  }
  return 0.0f;
}

/// Set when this CTA must stop after its current task: one of its threads raised
/// a device error (dev_fail) or saw the abort flag while waiting for a ring stage.
/// Read at every task end instead of the global abort flag (an L2 round trip per
/// task on the critical path); other CTAs' errors reach this one through its
/// counter waits, which poll the abort flag.
__device__ __forceinline__ volatile uint32_t& cta_stop() {
  __shared__ uint32_t flag;
  return flag;
}

__device__ void dev_fail(const DevProgram& P, int32_t code, int32_t task, int32_t detail) {
  cta_stop() = 1;
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
  csync();
  if (lane == 0) scratch[warp] = v;
  csync();
  float s = 0;
  for (int i = 0; i < kWarps; ++i) s += scratch[i];
  return s;
}

__device__ float block_max(float v, float* scratch) {
  v = dev::warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  csync();
  if (lane == 0) scratch[warp] = v;
  csync();
  float s = -INFINITY;
  for (int i = 0; i < kWarps; ++i) s = fmaxf(s, scratch[i]);
  return s;
}

__device__ double block_sum_d(double v, double* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  csync();
  if (lane == 0) scratch[warp] = v;
  csync();
  double s = 0;
  for (int i = 0; i < kWarps; ++i) s += scratch[i];
  return s;
}

__device__ uint32_t block_sum_u(uint32_t v, uint32_t* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  csync();
  if (lane == 0) scratch[warp] = v;
  csync();
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
  csync();
  if (lane == 0) fscratch[warp] = v, iscratch[warp] = i;
  csync();
  v = -INFINITY;
  i = INT32_MAX;
  for (int w = 0; w < kWarps; ++w)
    if (better(fscratch[w], iscratch[w], v, i)) v = fscratch[w], i = iscratch[w];
}

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
      (op != program::Opcode::QkvProj && op != program::Opcode::GateUp && op != program::Opcode::LmHead))
    return nullptr;
  const ProgramHeader& h = P.h;
  int64_t vec = h.hidden > h.intermediate ? h.hidden : h.intermediate;
  if (int64_t(h.n_heads) * h.head_dim > vec) vec = int64_t(h.n_heads) * h.head_dim;
  const int64_t off = (2 * (vec + 8) + 127) / 128 * 128;
  const int64_t bytes = int64_t(h.hidden) * dtype_size(buf_dtype(P, t.buf[1]));
  if (off + bytes > int64_t(P.work_bytes) || bytes % 16 != 0 ||
      (reinterpret_cast<uintptr_t>(bp<const uint8_t>(P, t.buf[1])) & 15) != 0)
    return nullptr;
  return reinterpret_cast<const uint8_t*>(smem) + off;
}

/// The pre-wait copies (norm weights, K/V rows) are issued by warps 1..7 only:
/// thread 0 polls the task's counters right after, and its acquire loads queued
/// behind its own copies measured 0.3-1.4% slower end to end (H100).
inline constexpr int kPrefetchFirst = 32;

/// Before a norm-matvec task's wait (all compute threads): its norm weights
/// (constants) into shared memory with cp.async; rms_norm_act waits for them.
__device__ void norm_prefetch(const DevProgram& P, const TaskDesc& t, float* smem) {
  const uint8_t* dst = norm_smem(P, t, smem);
  if (!dst) return;
  const uint8_t* src = bp<const uint8_t>(P, t.buf[1]);
  const int64_t n16 = int64_t(P.h.hidden) * dtype_size(buf_dtype(P, t.buf[1])) / 16;
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

// ---- the weight ring ------------------------------------------------------------

using Tile = TileDesc;  // program_kernel.h

/// The tile of task t (see TileDesc): the loader and the compute warps both
/// use the table built from this at setup, so they agree on every stage. The
/// rows per stage are the Program's; the addresses are this device's.
__device__ __forceinline__ Tile weight_tile(const DevProgram& P, const TaskDesc& t) {
  Tile T;
  T.base[0] = T.base[1] = nullptr;
  T.stride = 0;
  T.seg = 0;
  T.rows = t.row1 - t.row0;
  T.cap = 0;
  T.nmat = 0;
  T.dt = uint8_t(DType::F32);
  int32_t m0 = -1, m1 = -1;
  int64_t first = t.row0, k0 = 0, k1 = 0, cols = 0;
  switch (program::Opcode(t.opcode)) {
    case program::Opcode::QkvProj: m0 = t.buf[2]; first = t.row0 - t.arg[1]; cols = P.h.hidden; break;
    case program::Opcode::GateUp: m0 = t.buf[2]; m1 = t.buf[3]; cols = P.h.hidden; break;
    case program::Opcode::LmHead: m0 = t.buf[2]; cols = P.h.hidden; break;
    case program::Opcode::MatvecResidual: m0 = t.buf[1]; cols = __ldg(P.cols + m0); k0 = t.k0; k1 = t.k1; break;
    default: return T;
  }
  if (k1 == 0) k1 = cols;
  const DType dt = buf_dtype(P, m0);
  const int64_t esz = dt == DType::F32 ? 4 : 2;
  T.dt = uint8_t(dt);
  T.nmat = m1 >= 0 ? 2 : 1;
  const uint64_t seg = uint64_t((k1 - k0) * esz), stride = uint64_t(cols * esz);
  T.seg = uint32_t(seg);
  T.stride = uint32_t(stride);
  T.base[0] = bp<const uint8_t>(P, m0) + (first * cols + k0) * esz;
  if (m1 >= 0) T.base[1] = bp<const uint8_t>(P, m1) + (first * cols + k0) * esz;
  // Rows per stage: the compiler's (program/smem_plan.h plan_stage_rows, checked
  // against the stored dtypes at setup); none without a ring (single-task kernel).
  if (P.n_stages > 0) T.cap = int16_t(program::stage_rows(t));
  return T;
}

/// The compute side of the ring: stage `seq` lives in slot seq % n_stages with
/// phase (seq / n_stages) & 1.
struct RingView {
  char* ring;
  uint64_t* full;
  uint64_t* empty;
  int32_t n_stages;
  uint32_t stage_bytes;
  uint32_t seq;      // stages consumed so far (same value in every compute thread)
  float* red;        // [2][2 * kWarps] partial sums when several warps share a row
  uint32_t* abort;   // the kernel's abort flag
  uint64_t timeout_ns;
  const Tile* tile;  // the current task's tile (shared memory), or null: compute it
  uint64_t t_prep = 0, t_first = 0, t_last = 0;  // trace (thread 0): input ready, first / last stage landed
  // The CTA's copies (shared memory) of the first kPosCache sequences' positions,
  // taken at the step start, and of the page table (fixed for a launch) when it
  // has at most kPageCache entries; null: read global memory.
  const int32_t* pos = nullptr;
  const int32_t* pages = nullptr;
  // The loader's gate (program_kernel.cu hold_done): thread 0 stores the running
  // task's entry number once the task has read its inputs; null: none.
  volatile uint32_t* gate = nullptr;
  uint32_t entry = 0;
};

inline constexpr int kPosCache = 8;
inline constexpr int kPageCache = 512;

/// Position of sequence b this step.
__device__ __forceinline__ int64_t seq_pos(const DevProgram& P, const RingView& R, int b) {
  if (R.pos && b < kPosCache) return R.pos[b];
  return reinterpret_cast<const volatile SeqState*>(bp<const SeqState>(P, P.h.buf_state))[b].pos;
}

/// Page (an index into the KV arena's pages) holding position p of sequence b.
__device__ __forceinline__ int64_t page_of(const DevProgram& P, const RingView& R, int b, int64_t p) {
  const int32_t idx = program::kv_page_entry(P.h, b, p);
  return R.pages ? R.pages[idx] : __ldcg(bp<const int32_t>(P, P.h.buf_page_table) + idx);
}

// Element offsets in a KV cache: program::kv_offset (program/rules.h), found
// by argument-dependent lookup from the ProgramHeader argument.

__device__ __forceinline__ Tile task_tile(const DevProgram& P, const TaskDesc& t, const RingView& R) {
  return R.tile ? *R.tile : weight_tile(P, t);
}

/// Waits for a stage to land. Gives up (false) when the kernel is aborting or
/// nothing arrived for the watchdog deadline (then raises the timeout error), so
/// a loader bug ends in the watchdog's report, never a silent hang.
__device__ __forceinline__ bool ring_wait(const DevProgram& P, RingView& R, int slot) {
  const uint32_t parity = (R.seq / uint32_t(R.n_stages)) & 1;
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

// ---- the opcodes ---------------------------------------------------------------
// `smem` is the dynamic shared memory: at least max(hidden, intermediate,
// n_heads*head_dim, qkv width) + kWarps*(kMaxHeadDim+2) + 64 floats.

__device__ void qkv_proj(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch, RingView& R) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, width = qkv_w(h);
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  const Tile T = task_tile(P, t, R);
  MatvecJob J;
  J.kind = kEpiQkv;
  J.bias0 = t.buf[3];
  J.row0 = t.row0;
  J.row1 = t.row1;
  J.shift = t.arg[1];
  J.w0 = P.ptr[t.buf[2]];
  J.dt0 = buf_dtype(P, t.buf[2]);
  J.cols = J.K = H;
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_act(P, bp<const float>(P, t.buf[0]) + b * H, t.buf[1], H, act, scratch, norm_smem(P, t, smem));
    J.out = bp<uint16_t>(P, t.buf[4]) + b * width;
    matvec_rows(P, T, act, R, J);
  }
}

__device__ void gate_up(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch, RingView& R) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, I = h.intermediate;
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  const Tile T = task_tile(P, t, R);
  MatvecJob J;
  J.kind = kEpiGateUp;
  J.bias0 = t.buf[4];
  J.bias1 = t.buf[5];
  J.row0 = t.row0;
  J.row1 = t.row1;
  J.w0 = P.ptr[t.buf[2]];
  J.w1 = P.ptr[t.buf[3]];
  J.dt0 = buf_dtype(P, t.buf[2]);
  J.dt1 = buf_dtype(P, t.buf[3]);
  J.cols = J.K = H;
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_act(P, bp<const float>(P, t.buf[0]) + b * H, t.buf[1], H, act, scratch, norm_smem(P, t, smem));
    J.out = bp<uint16_t>(P, t.buf[6]) + b * I;
    matvec_rows(P, T, act, R, J);
  }
}

// ---- attention ----------------------------------------------------------------


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
/// the warps' online-softmax states wo[kWarps][g][hd + 2] (a warp that saw no
/// position has l = 0 and is skipped).
__device__ void merge_warp_partials(const float* wo, int g, int hd, float* part) {
  for (int k = threadIdx.x; k < g * (hd + 2); k += kThreads) {
    const int j = k / (hd + 2), i = k % (hd + 2);
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, wo[(w * g + j) * (hd + 2) + hd]);
    float acc = 0, L = 0;
    for (int w = 0; w < kWarps; ++w) {
      const float* blk = wo + (w * g + j) * (hd + 2);
      if (blk[hd + 1] == 0.0f) continue;
      const float sc = expf(blk[hd] - M);
      if (i < hd) acc += blk[i] * sc;
      else L += blk[hd + 1] * sc;
    }
    part[k] = i < hd ? acc : i == hd ? M : L;
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

/// Byte offset in the work area of the current rows (after q); the 16 bytes
/// before it hold the position the prefetch saw.
__device__ __forceinline__ int64_t attn_kv_offset(const ProgramHeader& h) {
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads;
  return (g * hd * 4 + 15) / 16 * 16 + 16;
}

/// from_smem: take pos from what attn_prefetch stored (it ran before the wait,
/// in the same step) instead of another L2 round trip.
__device__ __forceinline__ AttnSmem attn_smem(const DevProgram& P, const TaskDesc& t, float* smem, const RingView& R,
                                              bool from_smem) {
  const ProgramHeader& h = P.h;
  const int64_t hd = h.head_dim, C = t.arg[2];
  AttnSmem a;
  const int64_t kv_off = attn_kv_offset(h);
  int64_t* stash = reinterpret_cast<int64_t*>(reinterpret_cast<char*>(smem) + kv_off - 16);
  const int64_t len = (from_smem ? *stash : seq_pos(P, R, t.b0)) + 1;
  a.pos = len - 1;
  program::attn_chunk_range(a.pos, t.arg[1], C, &a.p0, &a.p1);
  a.cur = reinterpret_cast<uint16_t*>(reinterpret_cast<char*>(smem) + kv_off);
  a.kv = a.cur + 2 * hd;
  const int64_t room = (int64_t(P.work_bytes) - kv_off - 4 * hd) / (4 * hd);
  const int64_t want = min(a.p1, a.pos) - a.p0;
  const int64_t n = want < room ? want : room;
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
  if (threadIdx.x == 0) reinterpret_cast<int64_t*>(reinterpret_cast<char*>(smem) + attn_kv_offset(h) - 16)[0] = a.pos;
  const int hd = h.head_dim, vecs = hd * 2 / 16, kvh = t.arg[0];
  const uint16_t* kcache = bp<const uint16_t>(P, t.buf[1]);
  const uint16_t* vcache = bp<const uint16_t>(P, t.buf[2]);
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
  const int hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[2], b = t.b0, kvh = t.arg[0];
  const float* part = bp<const float>(P, t.buf[3]) + (int64_t(b) * h.n_kv_heads + kvh) * C * g * (hd + 2);
  uint16_t* out = bp<uint16_t>(P, t.buf[7]) + int64_t(b) * h.n_heads * hd + int64_t(kvh) * g * hd;
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
    const uint32_t old = dev::atom_add_acq_rel(P.counters + t.arg[3], 1);
    *flag = (old + 1) % uint32_t(t.arg[2]) == 0 ? 1.0f : 0.0f;
  }
  csync();
  if (*flag != 0.0f) merge_chunks(P, t, smem);
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
  const int g = h.n_heads / h.n_kv_heads, C = t.arg[2];
  const int b = t.b0, kvh = t.arg[0], chunk = t.arg[1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // The same positions attn_prefetch copied (it ran before the wait whenever there is a work area).
  const AttnSmem A = attn_smem(P, t, smem, R, P.work_bytes > 0);
  const int64_t p0 = A.p0, p1 = A.p1, pos = A.pos, pf_end = A.p0 + A.n_pf;
  const bool appends = p0 <= pos && pos < p1;
  float* qs = smem;                               // [g][hd]
  float* wo = reinterpret_cast<float*>(A.cur);    // [kWarps][g][hd + 2], after the position loop
  const float* inv_freq = bp<const float>(P, h.buf_rope);
  const uint16_t* raw = bp<const uint16_t>(P, t.buf[0]) + int64_t(b) * qkv_w(h);
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
    epilogue(y, t.buf[5]);
#pragma unroll
    for (int e = 0; e < KP; ++e) qs[warp * hd + lane * KP + e] = round_bf16(y[e]);
  }
  // ---- k epilogue and KV append at pos (the chunk that covers it) ----
  if (appends && warp == (g < kWarps ? g : 0)) {
    float y[KP], v[KP];
    load_row<KP>(raw + qkv_begin(h, 1) + int64_t(kvh) * hd + lane * KP, y);
    load_row<KP>(raw + qkv_begin(h, 2) + int64_t(kvh) * hd + lane * KP, v);  // bf16 values: stored back exactly
    epilogue(y, t.buf[6]);
    store_row_bf16<KP>(A.cur + lane * KP, y);
    store_row_bf16<KP>(A.cur + hd + lane * KP, v);
    const int64_t page = page_of(P, R, b, pos);
    if (page < 0 || page >= h.n_pages) {
      if (lane == 0) dev_fail(P, kErrBadPage, task, int32_t(page));
    } else {
      const int64_t off = kv_offset(h, page, kvh, pos, lane * KP);
      store_row_bf16<KP>(bp<uint16_t>(P, t.buf[1]) + off, y);
      store_row_bf16<KP>(bp<uint16_t>(P, t.buf[2]) + off, v);
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
  const uint16_t* kc = bp<const uint16_t>(P, t.buf[1]);
  const uint16_t* vc = bp<const uint16_t>(P, t.buf[2]);
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
  float* part = bp<float>(P, t.buf[3]) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  merge_warp_partials(wo, g, hd, part);
  arrive_and_merge(P, t, smem, scratch);
}

/// The Attention opcode for any head_dim <= kMaxHeadDim and group size: the
/// chunk at pos appends k and v first; each warp runs an online softmax over
/// positions p0 + warp, p0 + warp + kWarps, ...; the warps' (o, m, l) are merged
/// into the chunk's unnormalised partial; the last chunk to arrive merges.
__device__ void attention(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch) {
  const ProgramHeader& h = P.h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = t.arg[2];
  const int b = t.b0, kvh = t.arg[0], chunk = t.arg[1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t pos = bp<const SeqState>(P, t.buf[4])[b].pos;
  int64_t p0 = 0, p1 = 0;
  program::attn_chunk_range(pos, chunk, C, &p0, &p1);
  const uint16_t* raw = bp<const uint16_t>(P, t.buf[0]) + int64_t(b) * qkv_w(h);
  if (p0 <= pos && pos < p1) {  // k epilogue, then k and v into the cache at pos
    const uint16_t* k = raw + qkv_begin(h, 1) + kvh * hd;
    const uint16_t* v = raw + qkv_begin(h, 2) + kvh * hd;
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) smem[i] = bf16_to_f32(k[i]);
    csync();
    head_epilogue(P, t.buf[6], pos, smem, scratch);
    uint16_t* kd = kv_slot(P, t.buf[1], b, kvh, pos, task);
    uint16_t* vd = kv_slot(P, t.buf[2], b, kvh, pos, task);
    if (kd && vd)
      for (int64_t i = threadIdx.x; i < hd; i += kThreads) {
        kd[i] = f32_to_bf16(smem[i]);
        vd[i] = v[i];  // already bf16: copied, not rounded twice
      }
    csync();
  }
  float* part = bp<float>(P, t.buf[3]) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  float* q = smem;                    // [hd]
  float* wo = smem + kMaxHeadDim;     // [kWarps][hd + 2]: each warp's o, m, l
  constexpr int kPer = kMaxHeadDim / 32;
  for (int64_t j = 0; j < g; ++j) {
    const uint16_t* qh = raw + (kvh * g + j) * hd;
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) q[i] = bf16_to_f32(qh[i]);
    csync();
    head_epilogue(P, t.buf[5], pos, q, scratch);
    for (int64_t i = threadIdx.x; i < hd; i += kThreads) q[i] = round_bf16(q[i]);
    csync();
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
    csync();
    merge_warp_partials(wo, 1, int(hd), part + j * (hd + 2));
    csync();
  }
  arrive_and_merge(P, t, smem, scratch);
}

/// x[rows] += W[rows, k0:k1] . a[k0:k1] (+ bias), the add an fp32 atomic (apply_epi).
__device__ void matvec_residual(const DevProgram& P, const TaskDesc& t, float* smem, RingView& R) {
  const int64_t acols = P.cols[t.buf[0]], xcols = P.cols[t.buf[3]];
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  const Tile T = task_tile(P, t, R);
  MatvecJob J;
  J.kind = kEpiResidual;
  J.bias0 = t.buf[2];
  J.row0 = t.row0;
  J.row1 = t.row1;
  J.w0 = P.ptr[t.buf[1]];
  J.dt0 = buf_dtype(P, t.buf[1]);
  J.cols = P.cols[t.buf[1]];
  J.k0 = t.k0;
  J.K = t.k1 - t.k0;
  for (int b = t.b0; b < t.b1; ++b) {
    copy_act(bp<const uint16_t>(P, t.buf[0]) + b * acols + t.k0, J.K, act);
    J.out = bp<float>(P, t.buf[3]) + b * xcols;
    matvec_rows(P, T, act, R, J);
  }
}

__device__ void lm_head(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch, RingView& R) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, V = h.vocab, T = h.n_lm_tiles;
  int32_t* iscratch = reinterpret_cast<int32_t*>(scratch + 32);
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  const Tile W = task_tile(P, t, R);
  MatvecJob J;
  J.kind = kEpiLogits;
  J.row0 = t.row0;
  J.row1 = t.row1;
  J.w0 = P.ptr[t.buf[2]];
  J.dt0 = buf_dtype(P, t.buf[2]);
  J.cols = J.K = H;
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_act(P, bp<const float>(P, t.buf[0]) + b * H, t.buf[1], H, act, scratch, norm_smem(P, t, smem));
    J.out = bp<float>(P, t.buf[3]) + b * V;
    J.best = -INFINITY;
    J.best_i = INT32_MAX;
    matvec_rows(P, W, act, R, J);
    float best = J.best;
    int32_t best_i = J.best_i;
    block_argmax(best, best_i, scratch, iscratch);
    if (threadIdx.x == 0) {
      if (best_i == INT32_MAX) best_i = t.row0;  // every logit NaN: the CPU keeps row0 and -inf
      float* part = bp<float>(P, t.buf[4]) + (b * T + t.arg[0]) * 2;
      part[0] = best;
      part[1] = __int_as_float(best_i);
    }
    csync();
  }
}

}  // namespace keel::exec::cuda::prog
#include "exec/cuda/sampler.cuh"  // sample_token, block_argmax_logits (uses the reductions above)
namespace keel::exec::cuda::prog {

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
  csync();
  const bool stop = s_go != 0;
  csync();
  if (stop) {
    if (threadIdx.x == 0) {
      s.done = 1;
      s.stop_reason = int32_t(program::StopReason::Stopped);
    }
    return;
  }
  int32_t* tokens = bp<int32_t>(P, t.buf[5]) + int64_t(b) * h.max_context;
  if (pos + 1 < s.prompt_len) {
    if (threadIdx.x == 0) s_next = tokens[pos + 1], s_go = 1;
  } else {
    if (program::context_full(pos + 1, h.max_context)) {  // a prompt of max_context tokens: nothing to emit
      if (threadIdx.x == 0) {
        s.done = 1;
        s.stop_reason = int32_t(program::StopReason::Context);
      }
      return;
    }
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
      const program::SamplingParams sp = program::sampling_of(const_cast<const SeqState&>(s));  // set at launch
      const float u = program::rng_uniform(sp.seed, uint32_t(b), uint32_t(s.n_generated));
      next = sample_token(logits, V, tokens, pos + 1, sp, u, scratch);
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
      const program::StopReason stop = program::stop_after_token(
          program::is_eos(const_cast<const program::Control&>(ctl), next), false, n + 1, s.max_new, pos + 2, h.max_context);
      if (stop != program::StopReason::None) {
        s.done = 1;
        s.stop_reason = int32_t(stop);
        s_go = 0;
      }
    }
  }
  csync();
  const int32_t next = s_next;
  const bool go = s_go;
  csync();
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
__device__ __forceinline__ void run_task(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch,
                         RingView& R) {
  switch (program::Opcode(t.opcode)) {
    case program::Opcode::QkvProj: return qkv_proj(P, t, smem, scratch, R);
    case program::Opcode::GateUp: return gate_up(P, t, smem, scratch, R);
    case program::Opcode::Attention: {
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
    case program::Opcode::MatvecResidual: return matvec_residual(P, t, smem, R);
    case program::Opcode::LmHead: return lm_head(P, t, smem, scratch, R);
    case program::Opcode::Step: return step(P, t, task, scratch);
  }
  if (threadIdx.x == 0) dev_fail(P, kErrBadOpcode, task, t.opcode);
}

}  // namespace keel::exec::cuda::prog
