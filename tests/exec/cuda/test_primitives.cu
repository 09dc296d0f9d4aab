// GPU tests of the device primitives the megakernel is built from: the device
// inventory, the bandwidth probe, counter signal/wait across all SMs (a relay
// that only finishes if every acquire sees the release before it), the weight
// ring (loader warp + cp.async.bulk + mbarriers, checked word by word) and the
// wait deadline that the watchdog relies on. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <vector>

#include "exec/cuda/cuda_check.h"
#include "exec/cuda/device_info.h"
#include "exec/cuda/primitives.cuh"

namespace keel::exec::cuda {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

TEST(CudaDeviceInfo, ListsTheCard) {
  SKIP_WITHOUT_GPU();
  auto g = list_gpus();
  ASSERT_FALSE(g.empty());
  EXPECT_GT(g[0].sm_count, 0);
  EXPECT_GT(g[0].total_memory, 0u);
  EXPECT_GT(g[0].l2_bytes, 0);
  std::printf("GPU 0: %s cc %d.%d, %d SMs, %.1f GiB, L2 %d MiB, smem opt-in %d KiB, "
              "bus %d bit, peak %.0f GB/s\n",
              g[0].name.c_str(), g[0].cc_major, g[0].cc_minor, g[0].sm_count,
              g[0].total_memory / 1073741824.0, g[0].l2_bytes >> 20, g[0].smem_per_block_optin >> 10,
              g[0].memory_bus_bits, g[0].peak_bandwidth_gbs());
}

TEST(CudaDeviceInfo, ReadBandwidthIsPlausible) {
  SKIP_WITHOUT_GPU();
  double gbs = measure_read_bandwidth(0, 1ull << 30, 10);
  std::printf("read bandwidth: %.0f GB/s\n", gbs);
  // Any HBM GPU reads well over 500 GB/s; far above 10 TB/s would mean the L2 served it.
  EXPECT_GT(gbs, 500.0);
  EXPECT_LT(gbs, 10000.0);
}

// CTA b waits for counter[b-1] to reach step+1 (CTA 0 for counter[last] == step),
// records what it read from its predecessor's data word, then publishes its own.
__global__ void relay_kernel(uint32_t* counters, uint32_t* data, uint32_t* seen, int steps,
                             const uint32_t* abort) {
  const int b = blockIdx.x, n = gridDim.x;
  if (threadIdx.x != 0) return;
  for (int s = 0; s < steps; ++s) {
    if (b > 0) {
      if (!dev::wait_counter(&counters[b - 1], s + 1, abort, 2000000000ull)) return;
    } else if (s > 0) {
      if (!dev::wait_counter(&counters[n - 1], s, abort, 2000000000ull)) return;
    }
    uint32_t prev = b > 0 ? data[b - 1] : (s > 0 ? data[n - 1] : 0);
    seen[s * n + b] = prev;
    data[b] = prev + 1;
    dev::red_release_add(&counters[b], 1);
  }
}

TEST(CudaPrimitives, CounterRelayAcrossAllSms) {
  SKIP_WITHOUT_GPU();
  int sms = list_gpus()[0].sm_count;
  const int steps = 50;
  uint32_t *counters, *data, *seen, *abort;
  KEEL_CUDA_CHECK(cudaMalloc(&counters, sms * 4));
  KEEL_CUDA_CHECK(cudaMalloc(&data, sms * 4));
  KEEL_CUDA_CHECK(cudaMalloc(&seen, sms * steps * 4));
  KEEL_CUDA_CHECK(cudaMalloc(&abort, 4));
  KEEL_CUDA_CHECK(cudaMemset(counters, 0, sms * 4));
  KEEL_CUDA_CHECK(cudaMemset(data, 0, sms * 4));
  KEEL_CUDA_CHECK(cudaMemset(seen, 0xff, sms * steps * 4));
  KEEL_CUDA_CHECK(cudaMemset(abort, 0, 4));
  relay_kernel<<<sms, 32>>>(counters, data, seen, steps, abort);
  KEEL_CUDA_CHECK_LAUNCH("relay_kernel");
  KEEL_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint32_t> h(sms * steps);
  KEEL_CUDA_CHECK(cudaMemcpy(h.data(), seen, h.size() * 4, cudaMemcpyDeviceToHost));
  // Exact: the relay passes an integer along; any stale read breaks the chain.
  for (int s = 0; s < steps; ++s)
    for (int b = 0; b < sms; ++b) ASSERT_EQ(h[s * sms + b], uint32_t(s * sms + b)) << s << "," << b;
  cudaFree(counters);
  cudaFree(data);
  cudaFree(seen);
  cudaFree(abort);
}

__global__ void deadline_kernel(uint32_t* counter, const uint32_t* abort, uint32_t* result) {
  bool ok = dev::wait_counter(counter, 1, abort, 50000000ull);  // 50 ms
  *result = ok ? 1 : 2;
}

TEST(CudaPrimitives, WaitGivesUpAtTheDeadline) {
  SKIP_WITHOUT_GPU();
  uint32_t *counter, *abort, *result;
  KEEL_CUDA_CHECK(cudaMalloc(&counter, 4));
  KEEL_CUDA_CHECK(cudaMalloc(&abort, 4));
  KEEL_CUDA_CHECK(cudaMalloc(&result, 4));
  KEEL_CUDA_CHECK(cudaMemset(counter, 0, 4));
  KEEL_CUDA_CHECK(cudaMemset(abort, 0, 4));
  KEEL_CUDA_CHECK(cudaMemset(result, 0, 4));
  deadline_kernel<<<1, 1>>>(counter, abort, result);
  KEEL_CUDA_CHECK_LAUNCH("deadline_kernel");
  KEEL_CUDA_CHECK(cudaDeviceSynchronize());
  uint32_t r = 0;
  KEEL_CUDA_CHECK(cudaMemcpy(&r, result, 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(r, 2u);
  cudaFree(counter);
  cudaFree(abort);
  cudaFree(result);
}

constexpr int kStages = 4;
constexpr int kTileBytes = 8192;

// Warp 0 lane 0 loads tiles into the ring; warps 1..3 sum their tile's words.
__global__ void ring_kernel(const uint32_t* src, int tiles, unsigned long long* out) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ dev::Ring<kStages> ring;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int consumers = (blockDim.x / 32) - 1;
  if (threadIdx.x == 0) ring.init(consumers);
  __syncthreads();
  if (warp == 0) {
    if (lane == 0) {
      for (int k = blockIdx.x; k < tiles; k += gridDim.x) {
        uint32_t seq = (k - blockIdx.x) / gridDim.x;
        ring.wait_empty(seq);
        dev::mbar_arrive_expect_tx(&ring.full[seq % kStages], kTileBytes);
        dev::bulk_g2s(smem + (seq % kStages) * kTileBytes,
                      reinterpret_cast<const char*>(src) + size_t(k) * kTileBytes, kTileBytes,
                      &ring.full[seq % kStages]);
      }
    }
    return;
  }
  unsigned long long acc = 0;
  for (int k = blockIdx.x; k < tiles; k += gridDim.x) {
    uint32_t seq = (k - blockIdx.x) / gridDim.x;
    ring.wait_full(seq);
    const uint32_t* w = reinterpret_cast<const uint32_t*>(smem + (seq % kStages) * kTileBytes);
    for (int i = (warp - 1) * 32 + lane; i < kTileBytes / 4; i += consumers * 32) acc += w[i];
    __syncwarp();
    if (lane == 0) ring.release(seq);
  }
  atomicAdd(out, acc);
}

TEST(CudaPrimitives, WeightRingDeliversEveryWord) {
  SKIP_WITHOUT_GPU();
  const int tiles = 1037;  // odd, not a multiple of the grid
  std::vector<uint32_t> h(size_t(tiles) * kTileBytes / 4);
  for (size_t i = 0; i < h.size(); ++i) h[i] = uint32_t(i * 2654435761u) >> 8;
  unsigned long long want = 0;
  for (auto v : h) want += v;
  uint32_t* d;
  unsigned long long* out;
  KEEL_CUDA_CHECK(cudaMalloc(&d, h.size() * 4));
  KEEL_CUDA_CHECK(cudaMalloc(&out, 8));
  KEEL_CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  KEEL_CUDA_CHECK(cudaMemset(out, 0, 8));
  const int smem = kStages * kTileBytes;
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(ring_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  ring_kernel<<<list_gpus()[0].sm_count, 128, smem>>>(d, tiles, out);
  KEEL_CUDA_CHECK_LAUNCH("ring_kernel");
  KEEL_CUDA_CHECK(cudaDeviceSynchronize());
  unsigned long long got = 0;
  KEEL_CUDA_CHECK(cudaMemcpy(&got, out, 8, cudaMemcpyDeviceToHost));
  EXPECT_EQ(got, want);  // exact: integer sums
  cudaFree(d);
  cudaFree(out);
}

}  // namespace
}  // namespace keel::exec::cuda
