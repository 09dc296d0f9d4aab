// Microbenchmark: the memory side of a matmul task's stage loop, without
// the compute. Each of `ctas` CTAs (one per SM) runs 64 stages: a bulk copy
// of W KiB of distinct weights from HBM into a 2-slot ring and the copy of an
// input chunk (64 rows x icols bf16 of a 64 x 4096 matrix that stays in L2,
// cp.async 16 bytes a thread, or one cp.async.bulk a row), both one stage
// ahead; each stage waits for both, then a barrier. Configurations: weights
// only, inputs only, both, both with a per-CTA rotation of the chunk order,
// fewer CTAs. Prints us a stage (the slowest CTA) and GB/s.
//   nvcc -O3 -arch=sm_90a stage_memory.cu -o sm && ./sm
// H100 80GB HBM3, 2026-12-07 (docs/log/results.md): 132 CTAs, 64 KiB weights
// 2.675 us a stage (3235 GB/s: HBM-bound); + 32 KiB inputs 2.700 (inputs add
// nothing: L2 egress 4.8 TB/s); inputs alone 0.717 (6.0 TB/s); rotation no
// change; 60 CTAs 1.242 (3165 GB/s: 60 SMs saturate HBM); inputs as 512-byte
// bulk copies a row 2.097 alone (small bulk copies are slow).
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <cuda_runtime.h>

__device__ __forceinline__ uint32_t sa(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t* b, uint32_t c) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(b)), "r"(c) : "memory"); }
__device__ __forceinline__ void expect(uint64_t* b, uint32_t n) { asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(b)), "r"(n) : "memory"); }
__device__ __forceinline__ bool test_wait(uint64_t* b, uint32_t ph) {
  uint32_t ok;
  asm volatile("{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n" : "=r"(ok) : "r"(sa(b)), "r"(ph) : "memory");
  return ok;
}
__device__ __forceinline__ void bulk(void* d, const void* s, uint32_t n, uint64_t* b) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(sa(d)), "l"(s), "r"(n), "r"(sa(b)) : "memory");
}

struct Args {
  const char* w;       // weights: ctas * S * wbytes
  const uint16_t* in;  // input matrix: 64 rows x K bf16 (L2 resident)
  int K, S, wbytes, icols, mode, ctas;  // icols: columns of an input chunk; mode bit0 weights, bit1 inputs, bit2 rotate
  unsigned long long* ns;
};

__global__ void __launch_bounds__(256, 1) kern(Args A) {
  extern __shared__ __align__(1024) char sm[];
  __shared__ uint64_t full[2], ifull[2];
  char* ring = sm;
  uint16_t* ibuf = reinterpret_cast<uint16_t*>(sm + 2 * A.wbytes);
  const int tid = threadIdx.x;
  if (tid == 0) { mbar_init(&full[0], 1); mbar_init(&full[1], 1); mbar_init(&ifull[0], 1); mbar_init(&ifull[1], 1); asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
  __syncthreads();
  const bool W = A.mode & 1, I = A.mode & 2;
  const int nchunk = A.K / A.icols, rot = (A.mode & 4) ? (blockIdx.x * 7) % nchunk : 0;
  const int per_row = A.icols / 8, pieces = 64 * per_row, ielems = 64 * A.icols;
  auto issue = [&](int s) {
    const int slot = s & 1;
    if (W && tid == 0) {
      expect(&full[slot], A.wbytes);
      const char* src = A.w + (size_t(blockIdx.x) * A.S + s) * A.wbytes;
      for (int o = 0; o < A.wbytes; o += 16384) bulk(ring + slot * A.wbytes + o, src + o, 16384, &full[slot]);
    }
    const bool IB = A.mode & 8;
    if (I && IB) {
      const int c = (s + rot) % nchunk;
      if (tid == 0) expect(&ifull[slot], 64 * A.icols * 2);
      __syncwarp();
      if (tid < 32)
        for (int r = tid; r < 64; r += 32)
          bulk(ibuf + slot * ielems + r * A.icols, A.in + size_t(r) * A.K + size_t(c) * A.icols, A.icols * 2, &ifull[slot]);
    } else if (I) {
      const int c = (s + rot) % nchunk;
      for (int p = tid; p < pieces; p += 256) {
        const int r = p / per_row, q = p % per_row;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa(ibuf + slot * ielems + r * A.icols + q * 8)),
                     "l"(A.in + size_t(r) * A.K + size_t(c) * A.icols + q * 8) : "memory");
      }
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
  };
  __syncthreads();
  const uint64_t t0 = clock64();
  unsigned long long g0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g0));
  issue(0);
  for (int s = 0; s < A.S; ++s) {
    if (s + 1 < A.S) issue(s + 1); else asm volatile("cp.async.commit_group;" ::: "memory");
    if (W) while (!test_wait(&full[s & 1], (s >> 1) & 1)) {}
    if (I && (A.mode & 8)) while (!test_wait(&ifull[s & 1], (s >> 1) & 1)) {}
    asm volatile("cp.async.wait_group 1;" ::: "memory");
    __syncthreads();
  }
  unsigned long long g1;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g1));
  (void)t0;
  if (tid == 0) A.ns[blockIdx.x] = g1 - g0;
}

int main(int argc, char** argv) {
  int dev = 0; cudaDeviceProp pr; cudaGetDeviceProperties(&pr, dev);
  const int sms = pr.multiProcessorCount;
  const int S = 64, K = 4096;
  const size_t wmax = size_t(sms) * S * 65536;
  char* w; uint16_t* in; unsigned long long* ns;
  cudaMalloc(&w, wmax); cudaMemset(w, 1, wmax);
  cudaMalloc(&in, size_t(64) * K * 2); cudaMemset(in, 2, size_t(64) * K * 2);
  cudaMalloc(&ns, sms * sizeof(unsigned long long));
  cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);
  struct Cfg { int wkib, icols, mode, ctas; const char* name; };
  std::vector<Cfg> cfgs = {
      {64, 256, 1, sms, "W64 only"},        {64, 256, 2, sms, "I32 only"},
      {64, 256, 3, sms, "W64+I32"},          {64, 256, 7, sms, "W64+I32 rot"},
      {64, 128, 3, sms, "W64+I16"},          {64, 128, 7, sms, "W64+I16 rot"},
      {64, 256, 1, 60, "W64 only x60"},      {64, 256, 3, 60, "W64+I32 x60"},
      {64, 256, 3, 96, "W64+I32 x96"},       {64, 256, 2, 60, "I32 only x60"},
      {32, 128, 3, sms, "W32+I16"},          {64, 256, 11, sms, "W64+I32 bulk"},
      {64, 256, 15, sms, "W64+I32 bulk rot"}, {64, 256, 10, sms, "I32 bulk only"},          {64, 512, 2, sms, "I64 only"},
  };
  for (auto& c : cfgs) {
    Args A{w, in, K, S, c.wkib * 1024, c.icols, c.mode, c.ctas, ns};
    const size_t smem = size_t(2) * A.wbytes + size_t(2) * 64 * c.icols * 2;
    for (int rep = 0; rep < 3; ++rep) {
      kern<<<c.ctas, 256, smem>>>(A);
      cudaError_t e = cudaDeviceSynchronize();
      if (e != cudaSuccess) { printf("%s: %s\n", c.name, cudaGetErrorString(e)); return 1; }
    }
    std::vector<unsigned long long> h(c.ctas);
    cudaMemcpy(h.data(), ns, c.ctas * 8, cudaMemcpyDeviceToHost);
    double mx = 0, mean = 0;
    for (auto v : h) { mx = v > mx ? v : mx; mean += v; }
    mean /= c.ctas;
    const double per = mx / S / 1000.0;  // us a stage
    const double wgb = (c.mode & 1) ? double(c.ctas) * S * A.wbytes / mx : 0;  // GB/s
    const double igb = (c.mode & 2) ? double(c.ctas) * S * 64.0 * c.icols * 2 / mx : 0;
    printf("%-14s ctas %3d: %.3f us/stage (mean %.3f), HBM %.0f GB/s, L2 inputs %.0f GB/s, L2 egress %.0f GB/s\n", c.name,
           c.ctas, per, mean / S / 1000.0, wgb, igb, wgb + igb);
  }
  return 0;
}
