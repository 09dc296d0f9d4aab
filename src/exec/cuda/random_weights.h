// Counter-hash random fills on the GPU (random_weights.cu). Host header.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace keel::exec::cuda {

/// p[i] = center + scale * u(seed, i), u uniform in [-1, 1), stored as `dt`.
void fill_random(void* p, DType dt, size_t n, float center, float scale, uint64_t seed, cudaStream_t stream);

}  // namespace keel::exec::cuda
