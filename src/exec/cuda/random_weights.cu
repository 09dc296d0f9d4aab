// Random weights generated on the GPU (for `keel bench --random-weights` and the
// large-shape tests): a counter-based hash of (seed, element index) gives
// reproducible uniform values without a host copy of multi-gigabyte tensors.
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "exec/cuda/cuda_check.h"
#include "exec/cuda/random_weights.h"

namespace keel::exec::cuda {
namespace {

__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return float(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
}

__global__ void fill_kernel(void* p, DType dt, size_t n, float center, float scale, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = center + hash_uniform(seed, i) * scale;
    if (dt == DType::F32) static_cast<float*>(p)[i] = v;
    else if (dt == DType::F16) static_cast<uint16_t*>(p)[i] = f32_to_f16(v);
    else static_cast<uint16_t*>(p)[i] = f32_to_bf16(v);
  }
}

}  // namespace

void fill_random(void* p, DType dt, size_t n, float center, float scale, uint64_t seed, cudaStream_t stream) {
  fill_kernel<<<1024, 256, 0, stream>>>(p, dt, n, center, scale, seed);
  KEEL_CUDA_CHECK_LAUNCH("fill_kernel");
}

}  // namespace keel::exec::cuda
