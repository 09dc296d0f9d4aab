// Microbenchmark: how long a gpu-scope release (fence.acq_rel.gpu, red.release,
// atom.acq_rel) takes on a thread of an SM while that SM's loader warp streams
// into a 3-stage shared-memory ring (64 KiB stages, or argv[1] KiB) with cp.async.bulk (as the megakernel's
// loader does), against the same with the loader idle; SM cycles (clock64) per
// publish of 8 words. On the GPU machine: scripts/device_run.sh micro, or
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a release_latency.cu -o rl && ./rl [stage_kib]
// H100, 2026-11-26: fence.acq_rel.gpu 999 cycles idle, 6798 streaming;
// red.release 1001 / 6320; atom.acq_rel 1494 / 7826; atom.relaxed 610 / 2049;
// fence.acq_rel.cta 183 / 183; fence.acq_rel.gpu with the loader holding new
// copies meanwhile 1059 / 4062 (docs/cuda-executor.md).
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ uint64_t cycles() { uint64_t t; asm volatile("mov.u64 %0, %%clock64;" : "=l"(t)); return t; }

constexpr int kStages = 3;

__global__ void __launch_bounds__(64, 1) k(const char* src, size_t src_bytes, uint32_t* flags, unsigned long long* out,
                                           int stream, int mode, int iters, uint32_t kStage) {
  extern __shared__ __align__(128) char ring[];
  __shared__ __align__(8) uint64_t full[kStages];
  __shared__ volatile int quit, hold;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) asm volatile("mbarrier.init.shared.b64 [%0], 1;" ::"r"(smem_u32(&full[s])));
    asm volatile("fence.mbarrier_init.release.cluster;");
    quit = 0;
    hold = 0;
  }
  __syncthreads();
  if (warp == 1) {
    if (!stream || lane != 0) return;
    size_t off = size_t(blockIdx.x) * 7 * kStage % src_bytes;
    for (uint32_t seq = 0; !quit; ++seq) {
      const uint32_t slot = seq % kStages;
      if (seq >= kStages) {  // wait for the stage's previous copy to land (it is "consumed" at once)
        const uint32_t parity = ((seq / kStages) - 1) & 1;
        uint32_t done = 0;
        while (!done)
          asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                       : "=r"(done) : "r"(smem_u32(&full[slot])), "r"(parity) : "memory");
      }
      while (hold && !quit) {  // mode 5: no new copies while thread 0 publishes
      }
      asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(smem_u32(&full[slot])), "r"(kStage) : "memory");
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                       smem_u32(ring + size_t(slot) * kStage)), "l"(src + off), "r"(kStage), "r"(smem_u32(&full[slot]))
                   : "memory");
      off += kStage;
      if (off + kStage > src_bytes) off = 0;
    }
    // let the copies land before the CTA exits
    for (int s = 0; s < kStages; ++s) {
      uint32_t done = 0;
      for (int tries = 0; !done && tries < 1000000; ++tries)
        asm volatile("{ .reg .pred p; mbarrier.test_wait.parity.shared.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done) : "r"(smem_u32(&full[s])), "r"(0) : "memory");
    }
    return;
  }
  if (threadIdx.x != 0) return;
  uint32_t* mine = flags + blockIdx.x * 32;
  unsigned long long total = 0;
  for (int i = 0; i < iters; ++i) {
    if (mode == 5) hold = 1;
    const uint64_t t0 = cycles();
    for (int w = 0; w < 8; ++w) mine[1 + w] = i + w;  // some data to publish
    if (mode == 0) asm volatile("fence.acq_rel.gpu;" ::: "memory");
    else if (mode == 1) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(mine) : "memory");
    else if (mode == 2) { uint32_t o; asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(o) : "l"(mine) : "memory"); mine[16] = o; }
    else if (mode == 3) { uint32_t o; asm volatile("atom.relaxed.gpu.global.add.u32 %0, [%1], 1;" : "=r"(o) : "l"(mine) : "memory"); mine[16] = o; }
    else if (mode == 4) asm volatile("fence.acq_rel.cta;" ::: "memory");
    else if (mode == 5) asm volatile("fence.acq_rel.gpu;" ::: "memory");
    const uint64_t t1 = cycles();  // atomics: after the store of their result, so after they returned
    hold = 0;
    total += t1 - t0;
    __nanosleep(2000);
  }
  out[blockIdx.x] = total / iters;
  quit = 1;
}

int main(int argc, char** argv) {
  const uint32_t kStage = (argc > 1 ? uint32_t(atoi(argv[1])) : 64u) * 1024u;  // stage KiB (ring = 3 stages)
  int sms = 0;  // one CTA per SM
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const size_t src_bytes = size_t(2) << 30;
  char* src;
  uint32_t* flags;
  unsigned long long* out;
  cudaMalloc(&src, src_bytes);
  cudaMemset(src, 1, src_bytes);
  cudaMalloc(&flags, size_t(sms) * 128);
  cudaMalloc(&out, size_t(sms) * 8);
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, kStages * kStage) != cudaSuccess) {
    printf("cannot set %u bytes of shared memory\n", kStages * kStage);
    return 1;
  }
  const char* names[] = {"fence.acq_rel.gpu", "red.release.gpu", "atom.acq_rel.gpu", "atom.relaxed.gpu (no fence)", "fence.acq_rel.cta", "fence.acq_rel.gpu, loader held"};
  for (int mode = 0; mode < 6; ++mode)
    for (int stream = 0; stream < 2; ++stream) {
      k<<<sms, 64, kStages * kStage>>>(src, src_bytes, flags, out, stream, mode, 200, kStage);
      cudaError_t e = cudaGetLastError();
      if (e == cudaSuccess) e = cudaDeviceSynchronize();
      if (e != cudaSuccess) { printf("error %s\n", cudaGetErrorString(e)); return 1; }
      std::vector<unsigned long long> h(sms);
      cudaMemcpy(h.data(), out, sms * 8, cudaMemcpyDeviceToHost);
      double mean = 0; unsigned long long mx = 0;
      for (auto v : h) mean += double(v) / sms, mx = v > mx ? v : mx;
      printf("%-28s loader %s (%u KiB stages): mean %7.0f cycles per publish (worst SM %llu)\n", names[mode],
             stream ? "streaming" : "idle     ", kStage / 1024, mean, mx);
    }
  return 0;
}
