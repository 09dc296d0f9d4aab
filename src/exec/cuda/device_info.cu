// GPU inventory (list_gpus) and the streaming-read bandwidth probe. The probe
// reads a buffer far larger than L2 with 16-byte loads, four independent loads
// in flight per thread, and folds the words into one value that it writes out
// so the compiler cannot drop the reads. Its figure is the denominator of every
// "% of bandwidth" keel bench prints.
#include <algorithm>
#include <vector>

#include "exec/cuda/cuda_check.h"
#include "exec/cuda/device_info.h"

namespace keel::exec::cuda {

double GpuInfo::peak_bandwidth_gbs() const {
  // DDR: two transfers per memory clock.
  return 2.0 * double(memory_clock_khz) * 1e3 * double(memory_bus_bits) / 8.0 / 1e9;
}

std::vector<GpuInfo> list_gpus() {
  std::vector<GpuInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return out;
  }
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    GpuInfo g;
    g.index = d;
    g.name = p.name;
    g.cc_major = p.major;
    g.cc_minor = p.minor;
    g.sm_count = p.multiProcessorCount;
    g.total_memory = p.totalGlobalMem;
    g.l2_bytes = p.l2CacheSize;
    g.smem_per_block_optin = int(p.sharedMemPerBlockOptin);
    g.smem_per_sm = int(p.sharedMemPerMultiprocessor);
    cudaDeviceGetAttribute(&g.clock_khz, cudaDevAttrClockRate, d);
    cudaDeviceGetAttribute(&g.memory_clock_khz, cudaDevAttrMemoryClockRate, d);
    cudaDeviceGetAttribute(&g.memory_bus_bits, cudaDevAttrGlobalMemoryBusWidth, d);
    int prev = 0;
    if (cudaGetDevice(&prev) == cudaSuccess && cudaSetDevice(d) == cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) g.memory_free_bytes = free_b;
      cudaSetDevice(prev);
    }
    cudaGetLastError();
    out.push_back(g);
  }
  return out;
}

bool have_gpu() { return !list_gpus().empty(); }

namespace {

__global__ void fill_kernel(uint4* p, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    p[i] = make_uint4(uint32_t(i), uint32_t(i >> 7), 0x3c003c00u, uint32_t(i * 2654435761u));
}

// Each thread reads 4 x 16 bytes per iteration before using any of them.
__global__ void read_kernel(const uint4* __restrict__ p, size_t n, uint32_t* sink) {
  uint32_t acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride), c = __ldcs(p + i + 2 * stride),
          d = __ldcs(p + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^
           d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    uint4 a = __ldcs(p + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // practically never true; keeps the loads alive
}

}  // namespace

double measure_read_bandwidth(int device, uint64_t min_bytes, int repeats) {
  KEEL_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp p{};
  KEEL_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  uint64_t bytes = std::max<uint64_t>(min_bytes, 4ull * uint64_t(p.l2CacheSize));
  bytes = (bytes + 15) / 16 * 16;
  size_t n = bytes / 16;
  uint4* buf = nullptr;
  uint32_t* sink = nullptr;
  KEEL_CUDA_CHECK(cudaMalloc(&buf, bytes));
  KEEL_CUDA_CHECK(cudaMalloc(&sink, 4));
  cudaEvent_t e0{}, e1{};
  std::vector<float> ms;
  try {
    fill_kernel<<<p.multiProcessorCount * 4, 512>>>(buf, n);
    KEEL_CUDA_CHECK_LAUNCH("fill_kernel");
    KEEL_CUDA_CHECK(cudaEventCreate(&e0));
    KEEL_CUDA_CHECK(cudaEventCreate(&e1));
    const int blocks = p.multiProcessorCount * 4, threads = 512;
    for (int r = 0; r < repeats + 3; ++r) {
      KEEL_CUDA_CHECK(cudaEventRecord(e0));
      read_kernel<<<blocks, threads>>>(buf, n, sink);
      KEEL_CUDA_CHECK_LAUNCH("read_kernel");
      KEEL_CUDA_CHECK(cudaEventRecord(e1));
      KEEL_CUDA_CHECK(cudaEventSynchronize(e1));
      float t = 0;
      KEEL_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
      if (r >= 3) ms.push_back(t);  // first passes warm up clocks and TLBs
    }
  } catch (...) {
    cudaFree(buf);
    cudaFree(sink);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    throw;
  }
  cudaFree(buf);
  cudaFree(sink);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  double med = ms[ms.size() / 2];
  return double(bytes) / (med * 1e-3) / 1e9;
}

}  // namespace keel::exec::cuda
