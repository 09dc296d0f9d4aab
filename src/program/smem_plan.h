// The rules behind a Program's device plan (ProgramHeader::target, each task's
// stage_rows()): how much of the CUDA kernel's shared-memory work area the
// tasks need, and how many rows of a task's weight tile one ring stage holds.
// The compiler applies them for its Target (compiler/target.h); Program::
// validate() checks a Program against them with its declared weight dtypes, and
// the CUDA executor checks them again with the dtypes the checkpoint stores
// (exec/cuda/plan_check.h). The device code only follows the recorded numbers.
// Plain host code: the kernel's constants it depends on are repeated here and
// static_assert'ed equal in program_kernel.cu.
#pragma once

#include <cstdint>
#include <functional>

#include "core/dtype.h"
#include "program/program.h"

namespace keel::program {

inline constexpr int kKernelWarps = 8;          // compute warps per CTA (exec/cuda prog::kWarps)
inline constexpr int kKernelMaxHeadDim = 256;   // exec/cuda prog::kMaxHeadDim
inline constexpr int kMaxRingStages = 8;        // exec/cuda prog::kMaxRingStages
inline constexpr uint32_t kMaxStageRows = 1024;  // TileDesc::cap is an int16
inline constexpr uint32_t kWorkAlign = 128;      // the work area's size is a multiple of this

/// Bytes of the work area the tasks of `h` need at least: a matvec's bf16
/// input vector (the longest reduction), or the attention task's fp32 scratch,
/// or the merge's maxima, sums and totals; rounded up to kWorkAlign.
uint32_t kernel_work_bytes(const ProgramHeader& h);

/// The weight dtype of buffer `id` as the executor will hold it.
using DTypeOf = std::function<DType(int32_t id)>;

/// Rows of task `t`'s weight tile one stage of `stage_bytes` holds (the
/// compiler records it as stage_rows(t)), or 0 when the task does not stream
/// through the ring: not a matvec opcode, no ring, more than one sequence,
/// matrices of different dtypes, a row segment, stride or tile start not a
/// multiple of 16 bytes, or a row segment (times the matrices) larger than a
/// stage. Weight buffers start 16-byte aligned (the executor's allocations are).
uint32_t plan_stage_rows(const Program& p, const TaskDesc& t, uint32_t stage_bytes, const DTypeOf& dtype_of);

/// Checks the header's device plan and every task's stage_rows() against the
/// rules above with `dtype_of` (default: the Program's declared dtypes);
/// throws keel::Error naming the field or task at fault.
void check_plan(const Program& p, const DTypeOf& dtype_of = {});

}  // namespace keel::program
