// The device side of the opcode list (ops.h): every unit's device body
// (src/ops/<op>.cuh, DeviceOp<Op>) and the two dispatchers the persistent
// kernel (exec/cuda/program_kernel.cu) calls per task, pre_wait() before the
// task's counter waits and run_task() after them. pre_wait() is a fold over
// `Ops` comparing the opcode (then the shared default); run_task() a switch with one case per unit
// (KEEL_OP_CASE, the I-th unit of the list): a fold there compiled to a
// compare chain that cost single_task_kernel 20 registers (168 -> 188), the
// switch gives exactly the pre-unit code. Bodies are forceinlined: no indirect call.
#pragma once

#include "exec/cuda/program_tasks.cuh"
#include "ops/attention.cuh"
#include "ops/gate_up.cuh"
#include "ops/lm_head.cuh"
#include "ops/kv_append.cuh"
#include "ops/matvec_residual.cuh"
#include "ops/prefill_attention.cuh"
#include "ops/ops.h"
#include "ops/qkv_proj.cuh"
#include "ops/rms_norm.cuh"
#include "ops/step.cuh"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

namespace detail {

template <class... Op>
__device__ __forceinline__ void pre_wait(ops::OpList<Op...>, const DevProgram& P, const TaskDesc& t, float* work,
                                         const RingView& R) {
  const program::Opcode op = program::Opcode(t.opcode);
  // Every unit's test (header arithmetic, no branch: | and &), then one branch:
  // the unit's own work or the shared default.
  const bool own = (false | ... | ((op == Op::kOpcode) & DeviceOp<Op>::own_pre_wait(P)));
  if (own)
    (..., (op == Op::kOpcode ? DeviceOp<Op>::pre_wait(P, t, work, R) : void()));
  else
    norm_prefetch(P, t, work);
}

/// Whether a unit's tasks run on the batch kernels only (DeviceOp<Op>::
/// kBatchOnly): the decode kernel then sends its opcode to the bad-opcode
/// error with the switch's default, and its code stays what batch 1 was tuned on.
template <class D>
constexpr bool batch_only() {
  if constexpr (requires { D::kBatchOnly; }) return D::kBatchOnly;
  else return false;
}

/// Case `I + 1` of run_task's switch: the I-th unit's body, or (past the end
/// of the list, or a batch-only unit in the decode kernel) out of the switch
/// to the bad-opcode error.
#define KEEL_OP_CASE(I)                                                       \
  case program::Opcode(I + 1):                                                \
    if constexpr (I < List::size &&                                           \
                  (kMm || !detail::batch_only<DeviceOp<typename ops::At<(I < List::size ? I : 0), List>::type>>())) { \
      return DeviceOp<typename ops::At<I, List>::type>::run(P, t, task, smem, scratch, R); \
    } else {                                                                  \
      break;                                                                  \
    }
inline constexpr int kMaxSwitchOps = 9;  // the KEEL_OP_CASE lines in run_task

}  // namespace detail

/// Before task t's waits (every compute thread): its unit's pre-wait work, or
/// when the unit has none of its own (own_pre_wait false) the default,
/// norm_prefetch: a norm-matvec's norm weights into shared memory, nothing for
/// other opcodes. One shared copy of the default keeps the kernel's code (and
/// instruction cache) as it was: a unit that only calls norm_prefetch would
/// inline it once per opcode.
__device__ __forceinline__ void pre_wait(const DevProgram& P, const TaskDesc& t, float* work, const RingView& R) {
  detail::pre_wait(ops::Ops{}, P, t, work, R);
}

/// Runs task `task` (its descriptor already in shared memory as `t`) on the whole CTA.
/// A switch with one case per unit of the list (KEEL_OP_CASE), so it compiles to
/// exactly the code of a hand-written switch over the opcodes.
/// (A template only so that the cases past the end of the list are discarded.)
template <class List = ops::Ops>
__device__ __forceinline__ void run_task(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem, float* scratch,
                                         RingView& R) {
  static_assert(List::size <= detail::kMaxSwitchOps, "add KEEL_OP_CASE lines to run_task");
  switch (program::Opcode(t.opcode)) {
    KEEL_OP_CASE(0)
    KEEL_OP_CASE(1)
    KEEL_OP_CASE(2)
    KEEL_OP_CASE(3)
    KEEL_OP_CASE(4)
    KEEL_OP_CASE(5)
    KEEL_OP_CASE(6)
    KEEL_OP_CASE(7)
    KEEL_OP_CASE(8)
  }
  if (threadIdx.x == 0) dev_fail(P, kErrBadOpcode, task, t.opcode);
}

#undef KEEL_OP_CASE

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
