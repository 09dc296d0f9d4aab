// QkvProj's device body (see qkv_proj.h): the normed input into shared memory
// (rms_norm_act), then the tile's rows through the matvec engine with the qkv
// epilogue (bias, bf16). Before its wait: its norm weights (the default
// pre-wait, norm_prefetch).
#pragma once

#include "exec/cuda/mm.cuh"
#include "ops/qkv_proj.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using QkvSlots = ops::QkvProjOperands;  // QkvProj's operand slots

// `smem` is the dynamic shared memory (the work area after the ring): the bf16
// input vector, then the norm weights when they were prefetched (norm_smem).

__device__ void qkv_proj(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch, RingView& R) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, width = qkv_w(h);
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  const Tile T = task_tile(P, t, R);
  MatvecJob J;
  J.kind = kEpiQkv;
  J.bias0 = t.buf[QkvSlots::kBias];
  J.row0 = t.row0;
  J.row1 = t.row1;
  J.shift = t.arg[QkvSlots::kPartRow0];
  J.w0 = P.ptr[t.buf[QkvSlots::kWeight]];
  J.dt0 = buf_dtype(P, t.buf[QkvSlots::kWeight]);
  J.cols = J.K = H;
  if (kMm && T.cap > 0 && program::stage_cols(t) > 0) {  // several sequences (batch kernel): a matmul tile of the normed rows
    const MmJob M{bp<const uint16_t>(P, t.buf[QkvSlots::kX]) + t.b0 * H, H,
                  bp<uint16_t>(P, t.buf[QkvSlots::kOut]) + t.b0 * width, width, t.b1 - t.b0};
    mm_defer(P, T, R, J, M, smem);
    return;
  }
  for (int b = t.b0; b < t.b1; ++b) {
    if (kMm && t.buf[QkvSlots::kNormW] < 0) copy_act(bp<const uint16_t>(P, t.buf[QkvSlots::kX]) + b * H, H, act);
    else rms_norm_act(P, bp<const float>(P, t.buf[QkvSlots::kX]) + b * H, t.buf[QkvSlots::kNormW], H, act, scratch, norm_smem(P, t, smem));
    J.out = bp<uint16_t>(P, t.buf[QkvSlots::kOut]) + b * width;
    matvec_rows(P, T, act, R, J);
  }
}

template <>
struct DeviceOp<ops::QkvProj> {
  /// No pre-wait work of its own: the default, norm_prefetch, copies its norm weights.
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                  float* scratch, RingView& R) {
    qkv_proj(P, t, smem, scratch, R);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
