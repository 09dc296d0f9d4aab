// KvAppend's device body (see kv_append.h): a warp per lane runs the k
// epilogue in registers (RowEpilogue: the norm weights and frequencies loaded
// once a task) and writes k and the raw v into the cache. No pre-wait work.
#pragma once

#include "exec/cuda/attention_common.cuh"
#include "ops/kv_append.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using KvAppendSlots = ops::KvAppendOperands;

template <int HD>
__device__ __noinline__ void kv_append_lanes(const DevProgram& P, const TaskDesc& t, int32_t task, const RingView& R) {
  const ProgramHeader& h = P.h;
  const int kvh = t.arg[KvAppendSlots::kKvHead];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  RowEpilogue<HD> epi(P, t.buf[KvAppendSlots::kKNorm], lane);
  constexpr int E = RowEpilogue<HD>::E;
  for (int b = t.b0 + warp; b < t.b1; b += kWarps) {
    int64_t pos;
    bool done;
    lane_state(P, b, &pos, &done);
    if (done) continue;  // a finished prefill lane's frozen position is another step's
    const uint16_t* raw = bp<const uint16_t>(P, t.buf[KvAppendSlots::kQkv]) + int64_t(b) * qkv_w(h);
    const uint16_t* k = raw + qkv_begin(h, 1) + int64_t(kvh) * HD;
    const uint16_t* v = raw + qkv_begin(h, 2) + int64_t(kvh) * HD;
    float y[E];
    uint16_t vv[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int i = lane + 32 * e;
      y[e] = i < HD ? bf16_to_f32(__ldcg(k + i)) : 0.0f;
      vv[e] = i < HD ? __ldcg(v + i) : uint16_t(0);
    }
    const int64_t page = page_of(P, R, b, pos);
    epi.rope(pos);
    epi.apply(y, h.rms_eps, lane);
    if (page < 0 || page >= h.n_pages) {
      if (lane == 0) dev_fail(P, kErrBadPage, task, int32_t(page));
      continue;
    }
    const int64_t off = kv_offset(h, page, kvh, pos, 0);
    uint16_t* kd = bp<uint16_t>(P, t.buf[KvAppendSlots::kKCache]) + off;
    uint16_t* vd = bp<uint16_t>(P, t.buf[KvAppendSlots::kVCache]) + off;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int i = lane + 32 * e;
      if (i < HD) kd[i] = f32_to_bf16(y[e]), vd[i] = vv[e];  // v: bf16 already, copied, not rounded twice
    }
  }
}

template <>
struct DeviceOp<ops::KvAppend> {
  static constexpr bool kBatchOnly = true;  // prefill Programs run on the batch kernels
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float*, float*,
                                             RingView& R) {
    // Only prefill Programs have kv_append tasks, and they run on the batch kernels.
    if constexpr (kMm) {
      switch (P.h.head_dim) {  // the head dims program::prefill_attn_serves admits
        case 16: kv_append_lanes<16>(P, t, task, R); return;
        case 32: kv_append_lanes<32>(P, t, task, R); return;
        case 64: kv_append_lanes<64>(P, t, task, R); return;
        case 128: kv_append_lanes<128>(P, t, task, R); return;
        default: break;
      }
    }
    if (threadIdx.x == 0) dev_fail(P, kErrBadOpcode, task, t.opcode);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
