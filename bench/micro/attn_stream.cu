// Microbenchmark: attention's streaming block loops alone, the kernel's own
// attn_stream (K in registers a block ahead, p v on CUDA cores; variant 0) and
// attn_stream_smem (K and V staged in shared memory with cp.async, p v on
// tensor cores; variant 1 with the kernel's kAttnStreamStages stages, 2 and 3
// with 3 and 4), over a paged
// bf16 KV cache (pages of 64 positions in random order, the page table in
// shared memory): one CTA of 8 warps per SM, each taking tasks (sequence, kv
// head) of L positions; no weight traffic. Prints the K/V bytes read per
// second and the time per block of 8 positions per warp; the checksums of the
// two variants agree (same operations in the same order). On the GPU machine:
// scripts/device_run.sh micro, or
//   nvcc -DKEEL_HAVE_CUDA=1 -Isrc -O3 -std=c++20 --expt-relaxed-constexpr \
//     -gencode=arch=compute_90a,code=sm_90a bench/micro/attn_stream.cu -o as && ./as
// H200, 2026-12-04 (docs/log/results.md): variant 0 / 1, TB/s: Qwen3-8B shapes
// batch 64 x 512 positions 1.65 / 2.16, Llama-3.2-1B 0.98 / 1.55; 128 tasks of
// 4096 positions 2.33 / 3.21 and 1.15 / 2.42 (variant 1 with p v on CUDA
// cores then). H100, 2026-12-05, p v on tensor cores: variant 0 / 1 / 2 / 3,
// TB/s: 1.59 / 1.85 / 1.84 / 1.84 and 0.95 / 1.37 / 1.40 / 1.42; 2.11 / 2.45
// / 2.42 / 2.40 and 1.12 / 2.04 / 1.99 / 1.99 (the CUDA-core variant 1 of
// the same call: 1.81, 1.37, 2.46, 2.04).
#define KEEL_MM 1
#define KEEL_ATTN_STREAM 1
#define KEEL_DEVICE_NS micro_ns
#include "exec/cuda/mm.cuh"
#include "ops/attention.cuh"
#include <cstdio>
#include <vector>
#include <random>
#include <algorithm>
#include <cmath>
#include <cstdlib>
using namespace keel::exec::cuda::prog;
namespace program = keel::program;



template <int KP, int G, int NS>
__global__ void __launch_bounds__(256, 1) bench_kernel(DevProgram P, int n_tasks, int nkv, int64_t L, const float* q, float* out, int use_smem_pages, int variant) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  constexpr int hd = 32 * KP;
  const int g = G;
  float* qs = reinterpret_cast<float*>(smem_raw);                 // [g][hd]
  float* wo = qs + g * hd;                                         // [8][g][hd+2]
  float* pwb = wo + 8 * g * (hd + 2);                              // [8][72]
  int32_t* pg = reinterpret_cast<int32_t*>(pwb + 8 * 72);          // [512]
  uint16_t* sb = reinterpret_cast<uint16_t*>(pg + 512);            // [8][kStaging]: attn_stream_smem's buffer
  constexpr int64_t kStaging = NS * program::attn_stream_stage_elems(hd);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int32_t* pages = nullptr;
  const int n_pt = P.h.batch * P.h.pages_per_seq;
  if (use_smem_pages && n_pt <= 512) {
    const int32_t* pt = reinterpret_cast<const int32_t*>(P.ptr[P.h.buf_page_table]);
    for (int i = threadIdx.x; i < n_pt; i += blockDim.x) pg[i] = pt[i];
    pages = pg;
  }
  __syncthreads();
  float acc = 0;
  for (int t = blockIdx.x; t < n_tasks; t += gridDim.x) {
    const int b = t / nkv, kvh = t % nkv;
    for (int i = threadIdx.x; i < g * hd; i += blockDim.x) qs[i] = q[(size_t(t) * g * hd + i) % (1 << 20)];
    float* mine = wo + warp * g * (hd + 2);
    for (int i = lane; i < g * (hd + 2); i += 32) mine[i] = (i % (hd + 2)) == hd ? -INFINITY : 0.0f;
    __syncthreads();
    float* pw = pwb + warp * 72;
    if (variant == 0) attn_stream<KP, G>(P, pages, 0, b, kvh, 0, L, qs, g, mine, pw);
    else attn_stream_smem<KP, G, NS>(P, pages, 0, b, kvh, 0, L, qs, g, mine, pw, sb + warp * kStaging);
    __syncwarp();
    acc += mine[lane] + mine[hd + 1];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

static uint16_t f2bf(float f) { uint32_t u; memcpy(&u, &f, 4); return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16); }

template <int KP, int G, int NS>
double run_ns(const char* name, int B, int nkv, int64_t L, int grid, int variant, double cs0) {
  constexpr int hd = 32 * KP;
  const int ps = 64;
  const int pps = int((L + ps - 1) / ps);
  const int n_pages = B * pps;
  const size_t elems = size_t(n_pages) * nkv * ps * hd;
  std::vector<uint16_t> hk(elems);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> U(-1, 1);
  for (size_t i = 0; i < elems; ++i) hk[i] = f2bf(U(rng));
  std::vector<int32_t> pt(size_t(B) * pps);
  for (size_t i = 0; i < pt.size(); ++i) pt[i] = int32_t(i);
  std::shuffle(pt.begin(), pt.end(), rng);
  uint16_t *dk, *dv; int32_t* dpt; float *dq, *dout;
  cudaMalloc(&dk, elems * 2); cudaMalloc(&dv, elems * 2); cudaMalloc(&dpt, pt.size() * 4);
  cudaMemcpy(dk, hk.data(), elems * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dv, hk.data(), elems * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dpt, pt.data(), pt.size() * 4, cudaMemcpyHostToDevice);
  std::vector<float> hq(1 << 20);
  for (auto& x : hq) x = U(rng);
  cudaMalloc(&dq, hq.size() * 4); cudaMemcpy(dq, hq.data(), hq.size() * 4, cudaMemcpyHostToDevice);
  cudaMalloc(&dout, size_t(grid) * 256 * 4);
  uint8_t* ptrs_h[3] = {reinterpret_cast<uint8_t*>(dk), reinterpret_cast<uint8_t*>(dv), reinterpret_cast<uint8_t*>(dpt)};
  uint8_t** dptrs; cudaMalloc(&dptrs, sizeof ptrs_h); cudaMemcpy(dptrs, ptrs_h, sizeof ptrs_h, cudaMemcpyHostToDevice);
  program::TaskDesc td{};
  for (auto& x : td.buf) x = -1;
  td.buf[AttnSlots::kKCache] = 0; td.buf[AttnSlots::kVCache] = 1;
  program::TaskDesc* dtd; cudaMalloc(&dtd, sizeof td); cudaMemcpy(dtd, &td, sizeof td, cudaMemcpyHostToDevice);
  DevProgram P{};
  P.h.page_size = ps; P.h.n_pages = n_pages; P.h.n_kv_heads = nkv; P.h.head_dim = hd; P.h.pages_per_seq = pps;
  P.h.batch = B; P.h.buf_page_table = 2; P.h.attn_scale = 1.0f / sqrtf(float(hd));
  P.ptr = dptrs; P.tasks = dtd;
  const size_t smem = (G * hd + 8 * G * (hd + 2) + 8 * 72) * 4 + 512 * 4 +
                      size_t(8) * NS * size_t(program::attn_stream_stage_elems(hd)) * 2;
  cudaFuncSetAttribute(bench_kernel<KP, G, NS>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  const int n_tasks = B * nkv;
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  for (int w = 0; w < 2; ++w) bench_kernel<KP, G, NS><<<grid, 256, smem>>>(P, n_tasks, nkv, L, dq, dout, 1, variant);
  const int reps = 10;
  cudaEventRecord(e0);
  for (int w = 0; w < reps; ++w) bench_kernel<KP, G, NS><<<grid, 256, smem>>>(P, n_tasks, nkv, L, dq, dout, 1, variant);
  cudaEventRecord(e1); cudaEventSynchronize(e1);
  float ms = 0; cudaEventElapsedTime(&ms, e0, e1); ms /= reps;
  cudaError_t err = cudaGetLastError();
  std::vector<float> ho(size_t(grid) * 256);
  cudaMemcpy(ho.data(), dout, ho.size() * 4, cudaMemcpyDeviceToHost);
  double cs = 0; for (float x : ho) cs += x;
  const double bytes = double(n_tasks) * L * hd * 2 * 2;
  const double blocks_per_warp = double(n_tasks) / grid * L / 64.0;
  printf("%-28s var %d  B %3d nkv %d L %6lld hd %3d g %d: %8.1f us  %7.0f GB/s  %.2f us/block/warp  cs %.6g (vs var 0 %+.1e) %s\n",
         name, variant, B, nkv, (long long)L, hd, G, ms * 1000, bytes / ms / 1e6, ms * 1000 / blocks_per_warp, cs,
         cs0 == 0 ? 0.0 : (cs - cs0) / std::fabs(cs0), err == cudaSuccess ? "" : cudaGetErrorString(err));
  cudaFree(dk); cudaFree(dv); cudaFree(dpt); cudaFree(dq); cudaFree(dout); cudaFree(dptrs); cudaFree(dtd);
  return cs;
}

/// Variant 0 (attn_stream), then 1-3 (attn_stream_smem with the kernel's
/// stages, 3, 4); `only` >= 0: that variant alone (after variant 0 for the
/// checksum unless it is 0).
template <int KP, int G>
void run(const char* name, int B, int nkv, int64_t L, int grid, int only) {
  const double cs0 = run_ns<KP, G, 2>(name, B, nkv, L, grid, 0, 0.0);
  if (only < 0 || only == 1) run_ns<KP, G, program::kAttnStreamStages>(name, B, nkv, L, grid, 1, cs0);
  if (only < 0 || only == 2) run_ns<KP, G, 3>(name, B, nkv, L, grid, 2, cs0);
  if (only < 0 || only == 3) run_ns<KP, G, 4>(name, B, nkv, L, grid, 3, cs0);
}

/// Usage: attn_stream [CONFIG [VARIANT]]: every config (0-7) and variant, or
/// one config, or one config's one variant (e.g. under ncu: `ncu
/// --kernel-name regex:bench_kernel --launch-skip 14 --launch-count 1 ...
/// attn_stream 5 1` skips variant 0's and the variant's warm-up launches).
int main(int argc, char** argv) {
  int sms = 0; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const int cfg = argc > 1 ? std::atoi(argv[1]) : -1, only = argc > 2 ? std::atoi(argv[2]) : -1;
  auto want = [&](int i) { return cfg < 0 || cfg == i; };
  if (want(0)) run<4, 4>("qwen3-8b batch64 ctx512", 64, 8, 512, sms, only);
  if (want(1)) run<2, 4>("llama-1b batch64 ctx512", 64, 8, 512, sms, only);
  if (want(2)) run<4, 4>("qwen3-8b batch16 ctx512", 16, 8, 512, sms, only);
  if (want(3)) run<4, 8>("hd128 g8 batch64 ctx512", 64, 4, 512, sms, only);
  if (want(4)) run<1, 8>("hd32 g8 batch64 ctx512", 64, 8, 512, sms, only);
  if (want(5)) run<4, 4>("qwen3-8b 128 tasks x 4096", 16, 8, 4096, sms, only);  // ~32K context in 16 chunks
  if (want(6)) run<2, 4>("llama-1b 128 tasks x 4096", 16, 8, 4096, sms, only);
  if (want(7)) run<2, 4>("llama-1b 128 tasks x 2048", 16, 8, 2048, sms, only);
  return 0;
}
