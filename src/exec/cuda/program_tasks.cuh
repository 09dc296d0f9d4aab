// What every device task body (src/ops/<op>.cuh) is written with: the compute
// warps' barrier, buffer access through DevProgram, device errors, block
// reductions, the weight tile of a task (weight_tile(): which bytes the loader
// warp streams into the shared-memory ring for it) and the compute side's view
// of that ring (RingView). The matvec engine is in matvec.cuh, the attention
// helpers in attention_common.cuh; the opcode list and dispatch in
// src/ops/ops.cuh, included by program_kernel.cu.
//
// Rounding (both executors): bf16 normed inputs, raw q/k/v rows, q after its
// epilogue, K/V, attention output and MLP hidden; fp32 residual stream,
// accumulation, head norm, RoPE, softmax and logits; weights as stored (f32 /
// f16 / bf16). A task runs on one whole CTA of kThreads threads; it reads only
// its TaskDesc (copied to shared memory by the caller) and the buffers it names
// through DevProgram::ptr. The only differences from the CPU are summation
// order and libm ulps.
//
// Tasks run on the kThreads compute threads only: barriers are csync() (named
// barrier 1), never __syncthreads(), because the loader and signaller warps do
// not join. Hot-path helpers stay inlined: an out-of-line call keeps its frame in
// local memory, which measured 13-40% slower (docs/cuda-executor.md).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "core/dtype.h"
#include "exec/cuda/primitives.cuh"
#include "exec/cuda/program_kernel.h"
#include "ops/ops.h"
#include "program/program.h"
#include "program/rules.h"

// The kernel variant this translation unit compiles (program_kernel.h): 0 the
// decode kernel (one sequence per task: matvecs), 1 the batch kernel, which adds
// the matmul tiles (mm.cuh), the matmul loader path and the rms_norm opcode.
// Keeping them out of the decode kernel keeps its code (register allocation,
// instruction cache) exactly what batch-1 decode was tuned on: with them in,
// batch-1 decode measured 14-23% slower on the H200.
#ifndef KEEL_MM
#define KEEL_MM 0
#endif
// Each variant's device functions live in its own inline namespace, so the
// two translation units' host-side stubs of them do not collide at link time.
#ifndef KEEL_DEVICE_NS
#define KEEL_DEVICE_NS decode_device
#endif

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

inline constexpr bool kMm = KEEL_MM != 0;

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

/// Block sum of a double or uint32_t (the sampler's masses and counts);
/// scratch holds kWarps values.
template <class T>
__device__ T block_sum_t(T v, T* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  csync();
  if (lane == 0) scratch[warp] = v;
  csync();
  T s = 0;
  for (int i = 0; i < kWarps; ++i) s += scratch[i];
  return s;
}
__device__ double block_sum_d(double v, double* scratch) { return block_sum_t(v, scratch); }
__device__ uint32_t block_sum_u(uint32_t v, uint32_t* scratch) { return block_sum_t(v, scratch); }

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

/// The pre-wait copies (norm weights, K/V rows) are issued by warps 1..7 only:
/// thread 0 polls the task's counters right after, and its acquire loads queued
/// behind its own copies measured 0.3-1.4% slower end to end (H100).
inline constexpr int kPrefetchFirst = 32;

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
    case program::Opcode::QkvProj: m0 = t.buf[ops::QkvProjOperands::kWeight]; first = t.row0 - t.arg[ops::QkvProjOperands::kPartRow0]; cols = P.h.hidden; break;
    case program::Opcode::GateUp: m0 = t.buf[ops::GateUpOperands::kGateW]; m1 = t.buf[ops::GateUpOperands::kUpW]; cols = P.h.hidden; break;
    case program::Opcode::LmHead: m0 = t.buf[ops::LmHeadOperands::kWeight]; cols = P.h.hidden; break;
    case program::Opcode::MatvecResidual: m0 = t.buf[ops::MatvecResidualOperands::kWeight]; cols = __ldg(P.cols + m0); k0 = t.k0; k1 = t.k1; break;
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
  // Rows (and, for a matmul tile, columns) per stage: the compiler's
  // (program/smem_plan.h plan_stage, checked against the stored dtypes at
  // setup); none without a ring (single-task kernel).
  if (P.n_stages > 0) {
    T.cap = int16_t(program::stage_rows(t));
    const int64_t kc = program::stage_cols(t);
    if (kc > 0) T.seg = uint32_t(kc * esz);  // a matmul tile: one column chunk per row
  }
  return T;
}

struct MmCall;  // exec/cuda/mm.cuh: a matmul tile the kernel runs after the task's body

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
#if KEEL_DIAG_MM
  uint64_t dg_waited = 0;  // diagnostic builds: the task's wait end (mm_wgmma.cuh)
#endif
  // The CTA's copies (shared memory) of the first kPosCache sequences' positions,
  // taken at the step start, and of the page table (fixed for a launch) when it
  // has at most kPageCache entries; null: read global memory.
  const int32_t* pos = nullptr;
  const int32_t* pages = nullptr;
  // The loader's gate (program_kernel.cu hold_done): thread 0 stores the running
  // task's entry number once the task has read its inputs; null: none.
  volatile uint32_t* gate = nullptr;
  uint32_t entry = 0;
  // The batch kernel's deferred matmul (mm_defer): null where the caller runs none.
  MmCall* mm = nullptr;
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

/// An opcode unit's device side, specialised in src/ops/<op>.cuh:
///   static bool own_pre_wait(P): whether its tasks have pre-wait work of their
///     own for this Program's shapes; false: the default runs instead
///     (norm_prefetch: a norm-matvec's norm weights, nothing for others);
///   static void pre_wait(P, t, work, R): that work, which does not depend on
///     this step's producers, run by every compute thread before the task's
///     waits (e.g. K/V rows of earlier positions into shared memory);
///   static void run(P, t, task, smem, scratch, R): the task on the whole CTA.
/// Both are __forceinline__: the dispatcher (src/ops/ops.cuh) compiles to one
/// chain of opcode compares with the bodies inlined, no indirect call.
template <class Op>
struct DeviceOp;

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
