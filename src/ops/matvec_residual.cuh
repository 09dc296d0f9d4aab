// MatvecResidual's device body (see matvec_residual.h): its k-slice of a into
// shared memory, then the tile's rows through the matvec engine with the
// residual epilogue (fp32 add, atomic under split-K). No pre-wait work.
#pragma once

#include "exec/cuda/mm.cuh"
#include "ops/matvec_residual.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using MatvecResidualSlots = ops::MatvecResidualOperands;  // MatvecResidual's operand slots

/// x[rows] += W[rows, k0:k1] . a[k0:k1] (+ bias), the add an fp32 atomic (apply_epi).
__device__ void matvec_residual(const DevProgram& P, const TaskDesc& t, float* smem, RingView& R) {
  const int64_t acols = P.cols[t.buf[MatvecResidualSlots::kA]], xcols = P.cols[t.buf[MatvecResidualSlots::kX]];
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  const Tile T = task_tile(P, t, R);
  MatvecJob J;
  J.kind = kEpiResidual;
  J.bias0 = t.buf[MatvecResidualSlots::kBias];
  J.row0 = t.row0;
  J.row1 = t.row1;
  J.w0 = P.ptr[t.buf[MatvecResidualSlots::kWeight]];
  J.dt0 = buf_dtype(P, t.buf[MatvecResidualSlots::kWeight]);
  J.cols = P.cols[t.buf[MatvecResidualSlots::kWeight]];
  J.k0 = t.k0;
  J.K = t.k1 - t.k0;
  if (kMm && T.cap > 0 && program::stage_cols(t) > 0) {  // several sequences: a matmul tile (batch kernel)
    const MmJob M{bp<const uint16_t>(P, t.buf[MatvecResidualSlots::kA]) + t.b0 * acols + t.k0, acols,
                  bp<float>(P, t.buf[MatvecResidualSlots::kX]) + t.b0 * xcols, xcols, t.b1 - t.b0};
    mm_defer(P, T, R, J, M, smem);
    return;
  }
  for (int b = t.b0; b < t.b1; ++b) {
    copy_act(bp<const uint16_t>(P, t.buf[MatvecResidualSlots::kA]) + b * acols + t.k0, J.K, act);
    J.out = bp<float>(P, t.buf[MatvecResidualSlots::kX]) + b * xcols;
    matvec_rows(P, T, act, R, J);
  }
}

template <>
struct DeviceOp<ops::MatvecResidual> {
  /// No pre-wait work (the default norm_prefetch finds no norm weights to copy).
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                  float* scratch, RingView& R) {
    matvec_residual(P, t, smem, R);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
