// LmHead's device body (see lm_head.h): the normed input, the tile's logits
// through the matvec engine, then the tile's (max, lowest argmax) partial.
// Before its wait: its norm weights (the default pre-wait, norm_prefetch).
#pragma once

#include "exec/cuda/mm.cuh"
#include "ops/lm_head.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using LmHeadSlots = ops::LmHeadOperands;  // LmHead's operand slots

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
  J.w0 = P.ptr[t.buf[LmHeadSlots::kWeight]];
  J.dt0 = buf_dtype(P, t.buf[LmHeadSlots::kWeight]);
  J.cols = J.K = H;
  if (kMm && W.cap > 0 && program::stage_cols(t) > 0) {  // several sequences (batch kernel): a matmul tile of the normed rows, then each one's partial
    const MmJob M{bp<const uint16_t>(P, t.buf[LmHeadSlots::kX]) + t.b0 * H, H,
                  bp<float>(P, t.buf[LmHeadSlots::kLogits]) + t.b0 * V, V, t.b1 - t.b0};
    float* part = bp<float>(P, t.buf[LmHeadSlots::kArgmax]) + (t.b0 * T + t.arg[LmHeadSlots::kTile]) * 2;
    if (mm_defer(P, W, R, J, M, smem, part, 2 * T)) return;
    return mm_argmax(P, J, M, part, 2 * T);
  }
  for (int b = t.b0; b < t.b1; ++b) {
    if (kMm && t.buf[LmHeadSlots::kNormW] < 0) copy_act(bp<const uint16_t>(P, t.buf[LmHeadSlots::kX]) + b * H, H, act);
    else rms_norm_act(P, bp<const float>(P, t.buf[LmHeadSlots::kX]) + b * H, t.buf[LmHeadSlots::kNormW], H, act, scratch, norm_smem(P, t, smem));
    J.out = bp<float>(P, t.buf[LmHeadSlots::kLogits]) + b * V;
    J.best = -INFINITY;
    J.best_i = INT32_MAX;
    matvec_rows(P, W, act, R, J);
    float best = J.best;
    int32_t best_i = J.best_i;
    block_argmax(best, best_i, scratch, iscratch);
    if (threadIdx.x == 0) {
      if (best_i == INT32_MAX) best_i = t.row0;  // every logit NaN: the CPU keeps row0 and -inf
      float* part = bp<float>(P, t.buf[LmHeadSlots::kArgmax]) + (b * T + t.arg[LmHeadSlots::kTile]) * 2;
      part[0] = best;
      part[1] = __int_as_float(best_i);
    }
    csync();
  }
}

template <>
struct DeviceOp<ops::LmHead> {
  /// No pre-wait work of its own: the default, norm_prefetch, copies its norm weights.
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                  float* scratch, RingView& R) {
    lm_head(P, t, smem, scratch, R);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
