// The batch kernel's TMA sources (program_kernel.h MmSource): for every
// worker-list entry whose task is a matmul tile (program::stage_cols() > 0),
// CUtensorMaps over its weight matrices with the boxes the loader copies, made
// on the host with the driver's cuTensorMapEncodeTiled (found through the
// runtime, so keel links no libcuda) and uploaded to global memory.
#pragma once

#include <cstdint>
#include <vector>

#include "exec/cuda/program_kernel.h"
#include "program/program.h"

namespace keel::exec::cuda {

/// The device array of MmSource for `p`'s worker lists (null when no entry is a
/// matmul tile); `ptr` holds each buffer's device address; allocations go to
/// `owned`. Throws keel::Error when the driver refuses a tensor map.
const prog::MmSource* upload_mm_sources(const program::Program& p, const std::vector<uint8_t*>& ptr,
                                        std::vector<void*>& owned);

}  // namespace keel::exec::cuda
