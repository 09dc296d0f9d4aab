// The CUDA executor's check that a Program's device plan (ProgramHeader::target,
// each task's rows per ring stage) fits the device it is about to run on
// (DESIGN invariant 8: the executor validates and runs, it never re-plans).
// Host code with no CUDA dependency, so it is unit-tested on machines without
// a GPU (tests/exec/test_plan_check.cpp); ProgramExecutor fills DeviceFacts
// from the CUDA runtime and calls it before anything is uploaded.
#pragma once

#include <string>

#include "compiler/target.h"
#include "program/program.h"
#include "program/smem_plan.h"

namespace keel::exec::cuda {

/// What the executor knows about the device and its own kernel.
struct DeviceFacts {
  std::string name;             // e.g. "NVIDIA H200"
  int sms = 0;                  // multiprocessors
  uint32_t smem_per_block = 0;  // opt-in shared memory per block
  uint32_t static_smem = 0;     // the persistent kernel's static shared memory (cudaFuncGetAttributes)
  int max_ctas = 0;             // CTAs of the kernel co-resident with the Program's dynamic smem (0: unknown)
};

/// Why the Program's target does not match the device (empty when it does):
/// its worker count is not the SM count (fewer are allowed with
/// `allow_fewer_workers`, as tests run W = 1, 3, 7), or its shared-memory layout
/// (static reserve + ring + work area) exceeds the device's opt-in limit, or the
/// kernel's static shared memory exceeds the reserve the Program kept for it,
/// or more CTAs than can be co-resident. A recompile for the device fixes each.
std::string target_mismatch(const program::Program& p, const DeviceFacts& d, bool allow_fewer_workers = false);

/// Throws keel::Error when the Program cannot run on the device as planned:
/// target_mismatch() (naming the Program's target, the device and what to do),
/// or a task's rows per ring stage that the weights' stored dtypes
/// (`stored`; default: the declared ones) would not give.
void check_program_fits(const program::Program& p, const DeviceFacts& d, bool allow_fewer_workers = false,
                        const program::DTypeOf& stored = {});

/// The Target of CUDA device `device` ("auto": compiler::target_for_device of
/// its name, SM count and opt-in shared memory). CUDA builds only
/// (program_executor.cpp); throws keel::Error when there is no such device.
compiler::Target device_target(int device = 0);
/// The facts of CUDA device `device` and of this build's kernel (max_ctas
/// left 0: it depends on the Program). CUDA builds only.
DeviceFacts device_facts(int device = 0);

}  // namespace keel::exec::cuda
