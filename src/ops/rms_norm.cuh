// RmsNorm's device body (see rms_norm.h): each sequence's normed row, bf16,
// from registers to global memory, with the norm weights copied into the work
// area before the task's wait (rms_norm_prefetch).
#pragma once

#include "exec/cuda/matvec.cuh"
#include "ops/rms_norm.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using RmsNormSlots = ops::RmsNormOperands;  // RmsNorm's operand slots

/// Where an RmsNorm task keeps its norm weights: the start of the work area
/// (the task uses no other part of it), copied there before the task's wait
/// (rms_norm_prefetch); null where they do not fit or cannot be bulk-copied
/// (the single-task test kernel has no work area): then they are read from
/// global memory.
__device__ __forceinline__ const uint8_t* rms_norm_w_smem(const DevProgram& P, const TaskDesc& t, float* work) {
  const int32_t w = t.buf[RmsNormSlots::kNormW];
  const int64_t bytes = int64_t(P.h.hidden) * dtype_size(buf_dtype(P, w));
  if (bytes % 16 != 0 || bytes > int64_t(P.work_bytes) || (reinterpret_cast<uintptr_t>(bp<const uint8_t>(P, w)) & 15) != 0)
    return nullptr;
  return reinterpret_cast<const uint8_t*>(work);
}

/// Before the wait (compute threads past warp 0, which runs the waits): the
/// norm weights (constants) into the work area with cp.async. After the wait
/// the row's loads are then the task's only round trip to L2, which matters
/// because a load queues behind the SM's weight copies in flight.
__device__ __forceinline__ void rms_norm_prefetch(const DevProgram& P, const TaskDesc& t, float* work) {
  const uint8_t* dst = rms_norm_w_smem(P, t, work);
  if (!dst) return;
  const int32_t w = t.buf[RmsNormSlots::kNormW];
  const uint8_t* src = bp<const uint8_t>(P, w);
  const int64_t n16 = int64_t(P.h.hidden) * dtype_size(buf_dtype(P, w)) / 16;
  if (threadIdx.x >= kPrefetchFirst)
    for (int64_t k = int64_t(threadIdx.x) - kPrefetchFirst; k < n16; k += kThreads - kPrefetchFirst)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dev::smem_addr(dst + k * 16)), "l"(src + k * 16)
                   : "memory");
  asm volatile("cp.async.commit_group;" ::: "memory");
}

/// Each sequence's row: with the weights in the work area, x's loads (every
/// one in flight), one block reduction, and the bf16 row stored straight from
/// registers (norm_store, 8 bytes a thread and float4); else rms_norm_act into
/// the work area and out from there. The same operations in the same order
/// either way, so the same bits.
__device__ void rms_norm_rows(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch) {
  const int64_t H = P.h.hidden;
  const float* x = bp<const float>(P, t.buf[RmsNormSlots::kX]);
  uint16_t* y = bp<uint16_t>(P, t.buf[RmsNormSlots::kOut]);
  const uint8_t* ws = rms_norm_w_smem(P, t, smem);
  if (ws && H % 4 == 0 && H <= int64_t(kNormVec) * 4 * kThreads && (reinterpret_cast<uintptr_t>(x) & 15) == 0 &&
      (reinterpret_cast<uintptr_t>(y) & 7) == 0) {
    const DType wdt = buf_dtype(P, t.buf[RmsNormSlots::kNormW]);
    asm volatile("cp.async.wait_all;" ::: "memory");  // this thread's weight copies; block_sum's barrier: everyone's
    for (int b = t.b0; b < t.b1; ++b) {
      float4 v[kNormVec];
#pragma unroll
      for (int i = 0; i < kNormVec; ++i) {
        const int64_t q = threadIdx.x + int64_t(i) * kThreads;
        v[i] = q * 4 < H ? __ldcg(reinterpret_cast<const float4*>(x + b * H) + q) : make_float4(0, 0, 0, 0);
      }
      float ss = 0;
#pragma unroll
      for (int i = 0; i < kNormVec; ++i) ss += v[i].x * v[i].x + v[i].y * v[i].y + v[i].z * v[i].z + v[i].w * v[i].w;
      ss = block_sum(ss, scratch);  // (its first barrier also keeps the last row's reads of scratch before its writes)
      const float inv = 1.0f / sqrtf(ss / float(H) + P.h.rms_eps);
      if (wdt == DType::BF16) norm_store<DType::BF16>(v, inv, ws, H, y + b * H);
      else if (wdt == DType::F32) norm_store<DType::F32>(v, inv, ws, H, y + b * H);
      else norm_store<DType::F16>(v, inv, ws, H, y + b * H);
    }
    return;
  }
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_act(P, x + b * H, t.buf[RmsNormSlots::kNormW], H, act, scratch);
    uint16_t* out = y + b * H;
    if (H % 8 == 0 && (reinterpret_cast<uintptr_t>(out) & 15) == 0) {
      for (int64_t q = threadIdx.x; q < H / 8; q += kThreads)
        reinterpret_cast<uint4*>(out)[q] = reinterpret_cast<const uint4*>(act)[q];
    } else {
      for (int64_t i = threadIdx.x; i < H; i += kThreads) out[i] = act[i];
    }
    csync();  // act is rewritten by the next row
  }
}

template <>
struct DeviceOp<ops::RmsNorm> {
  /// Its norm weights into the work area (batch kernels only: the decode
  /// kernel, which runs no rms_norm task, keeps the shared default).
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return kMm; }
  static __device__ __forceinline__ void pre_wait(const DevProgram& P, const TaskDesc& t, float* work,
                                                  const RingView&) {
    if constexpr (kMm) rms_norm_prefetch(P, t, work);
  }
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                             float* scratch, RingView&) {
    // Only batch Programs have rms_norm tasks, and they run on the batch kernel.
    if constexpr (kMm) rms_norm_rows(P, t, smem, scratch);
    else if (threadIdx.x == 0) dev_fail(P, kErrBadOpcode, task, t.opcode);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
