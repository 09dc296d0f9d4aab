// RmsNorm's device body (see rms_norm.h): each sequence's normed row into the
// work area (rms_norm_act, the norm-matvecs' own), then out to global memory.
// No pre-wait work.
#pragma once

#include "exec/cuda/matvec.cuh"
#include "ops/rms_norm.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using RmsNormSlots = ops::RmsNormOperands;  // RmsNorm's operand slots

__device__ void rms_norm_rows(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch) {
  const int64_t H = P.h.hidden;
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_act(P, bp<const float>(P, t.buf[RmsNormSlots::kX]) + b * H, t.buf[RmsNormSlots::kNormW], H, act, scratch);
    uint16_t* out = bp<uint16_t>(P, t.buf[RmsNormSlots::kOut]) + b * H;
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
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                             float* scratch, RingView&) {
    // Only batch Programs have rms_norm tasks, and they run on the batch kernel.
    if constexpr (kMm) rms_norm_rows(P, t, smem, scratch);
    else if (threadIdx.x == 0) dev_fail(P, kErrBadOpcode, task, t.opcode);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
