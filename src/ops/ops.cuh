// The device side of the opcode list (ops.h): every unit's device body
// (src/ops/<op>.cuh, DeviceOp<Op>) and the two dispatchers the persistent
// kernel (exec/cuda/program_kernel.cu) calls per task, pre_wait() before the
// task's counter waits and run_task() after them. Each is a fold over `Ops`
// comparing the opcode: with the bodies forceinlined it compiles to the same
// compare-and-branch chain a switch gives, with no indirect call.
#pragma once

#include "exec/cuda/program_tasks.cuh"
#include "ops/attention.cuh"
#include "ops/gate_up.cuh"
#include "ops/lm_head.cuh"
#include "ops/matvec_residual.cuh"
#include "ops/ops.h"
#include "ops/qkv_proj.cuh"
#include "ops/step.cuh"

namespace keel::exec::cuda::prog {

namespace detail {

template <class... Op>
__device__ __forceinline__ void pre_wait(ops::OpList<Op...>, const DevProgram& P, const TaskDesc& t, float* work,
                                         const RingView& R) {
  const program::Opcode op = program::Opcode(t.opcode);
  (void)((op == Op::kOpcode ? (DeviceOp<Op>::pre_wait(P, t, work, R), true) : false) || ...);
}

template <class... Op>
__device__ __forceinline__ bool run_task(ops::OpList<Op...>, const DevProgram& P, const TaskDesc& t, int32_t task,
                                         float* smem, float* scratch, RingView& R) {
  const program::Opcode op = program::Opcode(t.opcode);
  return ((op == Op::kOpcode ? (DeviceOp<Op>::run(P, t, task, smem, scratch, R), true) : false) || ...);
}

}  // namespace detail

/// Before task t's waits (every compute thread): its unit's pre-wait work.
__device__ __forceinline__ void pre_wait(const DevProgram& P, const TaskDesc& t, float* work, const RingView& R) {
  detail::pre_wait(ops::Ops{}, P, t, work, R);
}

/// Runs task `task` (its descriptor already in shared memory as `t`) on the whole CTA.
__device__ __forceinline__ void run_task(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch,
                                         RingView& R) {
  if (!detail::run_task(ops::Ops{}, P, t, task, smem, scratch, R) && threadIdx.x == 0)
    dev_fail(P, kErrBadOpcode, task, t.opcode);
}

}  // namespace keel::exec::cuda::prog
