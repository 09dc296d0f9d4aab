// Random weights generated on the GPU (for `keel bench --random-weights` and the
// large-shape tests): a counter-based hash of (seed, element index) gives
// reproducible uniform values without a host copy of multi-gigabyte tensors.
#include <cuda_runtime.h>

#include "core/dtype.h"
#include "exec/cuda/cuda_check.h"
#include "exec/cuda/kernels.h"

namespace keel::exec::cuda {
namespace {

__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return float(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
}

__global__ void fill_bf16_kernel(uint16_t* p, size_t rows, size_t ld, size_t k, float scale,
                                 uint64_t seed) {
  const size_t n = rows * ld;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    const size_t col = i % ld;
    p[i] = col < k ? f32_to_bf16(hash_uniform(seed, i) * scale) : uint16_t(0);
  }
}

__global__ void fill_f32_kernel(float* p, size_t n, float center, float scale, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    p[i] = center + hash_uniform(seed, i) * scale;
}

}  // namespace

void fill_random_bf16(uint16_t* p, size_t rows, size_t ld, size_t k, float scale, uint64_t seed,
                      void* stream) {
  fill_bf16_kernel<<<1024, 256, 0, static_cast<cudaStream_t>(stream)>>>(p, rows, ld, k, scale, seed);
  KEEL_CUDA_CHECK_LAUNCH("fill_bf16_kernel");
}

void fill_random_f32(float* p, size_t n, float center, float scale, uint64_t seed, void* stream) {
  fill_f32_kernel<<<256, 256, 0, static_cast<cudaStream_t>(stream)>>>(p, n, center, scale, seed);
  KEEL_CUDA_CHECK_LAUNCH("fill_f32_kernel");
}

}  // namespace keel::exec::cuda
