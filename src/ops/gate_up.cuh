// GateUp's device body (see gate_up.h): the normed input, then the tile's gate
// and up rows through the matvec engine (both matrices in each ring stage) with
// the SiLU(g)*u epilogue. Before its wait: its norm weights (the default
// pre-wait, norm_prefetch).
#pragma once

#include "exec/cuda/mm.cuh"
#include "ops/gate_up.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using GateUpSlots = ops::GateUpOperands;  // GateUp's operand slots

__device__ void gate_up(const DevProgram& P, const TaskDesc& t, float* smem, float* scratch, RingView& R) {
  const ProgramHeader& h = P.h;
  const int64_t H = h.hidden, I = h.intermediate;
  uint16_t* act = reinterpret_cast<uint16_t*>(smem);
  const Tile T = task_tile(P, t, R);
  MatvecJob J;
  J.kind = kEpiGateUp;
  J.bias0 = t.buf[GateUpSlots::kGateBias];
  J.bias1 = t.buf[GateUpSlots::kUpBias];
  J.row0 = t.row0;
  J.row1 = t.row1;
  J.w0 = P.ptr[t.buf[GateUpSlots::kGateW]];
  J.w1 = P.ptr[t.buf[GateUpSlots::kUpW]];
  J.dt0 = buf_dtype(P, t.buf[GateUpSlots::kGateW]);
  J.dt1 = buf_dtype(P, t.buf[GateUpSlots::kUpW]);
  J.cols = J.K = H;
  if (kMm && T.cap > 0 && program::stage_cols(t) > 0) {  // several sequences (batch kernel): a matmul tile of the normed rows
    const MmJob M{bp<const uint16_t>(P, t.buf[GateUpSlots::kX]) + t.b0 * H, H,
                  bp<uint16_t>(P, t.buf[GateUpSlots::kOut]) + t.b0 * I, I, t.b1 - t.b0};
    mm_defer(P, T, R, J, M, smem);
    return;
  }
  for (int b = t.b0; b < t.b1; ++b) {
    if (kMm && t.buf[GateUpSlots::kNormW] < 0) copy_act(bp<const uint16_t>(P, t.buf[GateUpSlots::kX]) + b * H, H, act);
    else rms_norm_act(P, bp<const float>(P, t.buf[GateUpSlots::kX]) + b * H, t.buf[GateUpSlots::kNormW], H, act, scratch, norm_smem(P, t, smem));
    J.out = bp<uint16_t>(P, t.buf[GateUpSlots::kOut]) + b * I;
    matvec_rows(P, T, act, R, J);
  }
}

template <>
struct DeviceOp<ops::GateUp> {
  /// No pre-wait work of its own: the default, norm_prefetch, copies its norm weights.
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                  float* scratch, RingView& R) {
    gate_up(P, t, smem, scratch, R);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
