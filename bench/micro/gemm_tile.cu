// Microbenchmark: a Hopper GEMM tile of the kind a prefill pass of many
// tokens needs, with the megakernel's thread layout (two compute warpgroups,
// one loader warpgroup of which one thread issues TMA). Y[T, M] = X[T, K] W[M, K]^T
// (bf16 in, fp32 accumulate, bf16 out, token-major like keel's activation
// buffers). A CTA (one per SM, persistent) walks output tiles of BM = 128
// weight rows x BN tokens, tokens fastest (the CTAs running together share
// weight rows through L2); each tile streams K in BK = 64-column stages of
// both operands by TMA (128-byte swizzle) through an S-slot ring; warpgroup w
// multiplies rows 64 w .. 64 w + 63 against all BN tokens (wgmma m64nBNk16,
// four k-steps a stage), keeps one stage's wgmma in flight and frees the slot
// of the one before (lane 0 of each warp arrives); the loader runs ahead
// into the next tile while the compute warpgroups store the last one.
// Variants: BN 256 / 128, 3-6 slots, stores straight from the accumulators
// or through shared memory, the inputs loaded by the loader or by compute
// thread 0 (gemm()'s comment). Prints us, TFLOP/s and the error against a
// plain fp32 GEMM (two shapes, 192 tokens each, every variant).
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a gemm_tile.cu -o gt && ./gt
// H100 80GB HBM3, 2026-12-07 (docs/log/results.md): BN 256, 4 slots, stores
// through shared memory: 744-789 TFLOP/s on Qwen3-8B's prefill matrices at
// 2000 tokens, cuBLAS 754-796; the inputs loaded by compute thread 0 cost
// nothing but on down_proj (-11%); 3 slots 6-21% slower than 4.
// Compare: torch.nn.functional.linear on the same shapes (gemm_tile_peer.py).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));                 \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

__device__ __forceinline__ uint32_t sa(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t* b, uint32_t c) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(b)), "r"(c) : "memory");
}
__device__ __forceinline__ void expect_tx(uint64_t* b, uint32_t n) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(b)), "r"(n) : "memory");
}
__device__ __forceinline__ void arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sa(b)) : "memory");
}
__device__ __forceinline__ void wait(uint64_t* b, uint32_t ph) {
  uint32_t ok = 0;
  while (!ok)
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(ok) : "r"(sa(b)), "r"(ph) : "memory");
}
__device__ __forceinline__ void tma2d(void* dst, const CUtensorMap* map, int x, int y, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          sa(dst)), "l"(map), "r"(x), "r"(y), "r"(sa(bar)) : "memory");
}
/// K-major operand, 128-byte swizzle, 8-row groups 1024 bytes apart, at shared address `addr` (1024-aligned panel).
__device__ __forceinline__ uint64_t desc(uint32_t addr) {
  return (uint64_t(1) << 62) | (uint64_t(1024 >> 4) << 32) | uint64_t((addr & 0x3FFFFu) >> 4);
}

template <int N> struct Wg;
template <> struct Wg<64> {
  static __device__ __forceinline__ void mma(float (&d)[32], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(acc));
  }
};
template <> struct Wg<128> {
  static __device__ __forceinline__ void mma(float (&d)[64], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(acc));
  }
};
template <> struct Wg<256> {
  static __device__ __forceinline__ void mma(float (&d)[128], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
                 : "l"(da), "l"(db), "r"(acc));
  }
};

constexpr int BM = 128, BK = 64;

struct Shape {
  int M, K, T;
};

// store: 0 none, 1 straight from the accumulators (2-byte stores), 2 through
// a per-warp shared buffer (8-byte stores of 4 rows of one token).
// b_by_compute: the loader warpgroup's thread loads only the weights; compute
// thread 0 loads the inputs, each into a slot once all
// eight compute warps released it (what the megakernel would do: its loader
// never waits for a counter, the compute warps do). S ahead: a tile's
// first S at its start, then stage k + S once the warps released stage k.
template <int BN, int S>
__global__ void __launch_bounds__(384, 1) gemm(const __grid_constant__ CUtensorMap mw, const __grid_constant__ CUtensorMap mx,
                                               __nv_bfloat16* __restrict__ Y, Shape sh, int store, int b_by_compute) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  __shared__ uint64_t full[S], bfull[S], empty[S];
  __shared__ __align__(16) __nv_bfloat16 ostage[8][8 * 16];  // per compute warp: 8 tokens x 16 rows
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE = A_BYTES + B_BYTES;
  const int tid = threadIdx.x, wg = tid / 128;
  if (tid == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&bfull[s], 1);
      mbar_init(&empty[s], 8);  // lane 0 of each compute warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  const int MT = sh.M / BM, NT = (sh.T + BN - 1) / BN, KB = sh.K / BK, tiles = MT * NT;
  if (wg == 2) {  // loader
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (tid == 256) {
      uint32_t q = 0;
      for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int m0 = (t / NT) * BM, n0 = (t % NT) * BN;
        for (int kb = 0; kb < KB; ++kb, ++q) {
          const int s = q % S;
          if (q >= S) wait(&empty[s], ((q / S) - 1) & 1);
          expect_tx(&full[s], b_by_compute ? A_BYTES : STAGE);
          tma2d(sm + s * STAGE, &mw, kb * BK, m0, &full[s]);
          if (!b_by_compute) tma2d(sm + s * STAGE + A_BYTES, &mx, kb * BK, n0, &full[s]);
        }
      }
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const int lane = tid % 32, warp = (tid % 128) / 32;
  uint32_t q = 0;
  // Compute thread 0's input loads: stage number qb of the ring (tile t's k-block kb).
  auto load_b = [&](uint32_t qb, int n0, int kb) {
    const int s = qb % S;
    if (qb >= S) wait(&empty[s], ((qb / S) - 1) & 1);
    expect_tx(&bfull[s], B_BYTES);
    tma2d(sm + s * STAGE + A_BYTES, &mx, kb * BK, n0, &bfull[s]);
  };
  for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int m0 = (t / NT) * BM, n0 = (t % NT) * BN;
    if (b_by_compute && tid == 0)  // the tile's first S stages (once the last tile's warps released their slots)
      for (int kb = 0; kb < S && kb < KB; ++kb) load_b(q + kb, n0, kb);
    float d[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;
    for (int kb = 0; kb < KB; ++kb, ++q) {
      const int s = q % S;
      wait(&full[s], (q / S) & 1);
      if (b_by_compute) wait(&bfull[s], (q / S) & 1);
      const uint32_t a = sa(sm + s * STAGE) + wg * 64 * 128, b = sa(sm + s * STAGE + A_BYTES);
      const uint64_t da = desc(a), db = desc(b);
      asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
      for (int j = 0; j < 4; ++j) Wg<BN>::mma(d, da + 2 * j, db + 2 * j, kb > 0 || j > 0);
      asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
      asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
      if (kb > 0 && lane == 0) arrive(&empty[(q - 1) % S]);
      if (b_by_compute && tid == 0 && kb > 0 && kb - 1 + S < KB) load_b(q - 1 + S, n0, kb - 1 + S);
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    if (lane == 0) arrive(&empty[(q - 1) % S]);
    const int mw0 = m0 + wg * 64 + warp * 16;  // this warp's 16 rows
    if (store == 1) {
      const int m = mw0 + lane / 4;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int n = n0 + 8 * j + 2 * (lane % 4);
        if (n < sh.T) {
          Y[size_t(n) * sh.M + m] = __float2bfloat16(d[4 * j]);
          Y[size_t(n) * sh.M + m + 8] = __float2bfloat16(d[4 * j + 2]);
        }
        if (n + 1 < sh.T) {
          Y[size_t(n + 1) * sh.M + m] = __float2bfloat16(d[4 * j + 1]);
          Y[size_t(n + 1) * sh.M + m + 8] = __float2bfloat16(d[4 * j + 3]);
        }
      }
    } else if (store == 2) {
      __nv_bfloat16* o = ostage[(tid / 32) % 8];
      const int g = lane / 4, tq = lane % 4, tok = lane / 4, r4 = (lane % 4) * 4;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        o[(2 * tq) * 16 + g] = __float2bfloat16(d[4 * j]);
        o[(2 * tq + 1) * 16 + g] = __float2bfloat16(d[4 * j + 1]);
        o[(2 * tq) * 16 + g + 8] = __float2bfloat16(d[4 * j + 2]);
        o[(2 * tq + 1) * 16 + g + 8] = __float2bfloat16(d[4 * j + 3]);
        __syncwarp();
        const int n = n0 + 8 * j + tok;
        const uint2 v = *reinterpret_cast<const uint2*>(o + tok * 16 + r4);
        if (n < sh.T) *reinterpret_cast<uint2*>(Y + size_t(n) * sh.M + mw0 + r4) = v;
        __syncwarp();
      }
    }
  }
}

__global__ void ref_gemm(const __nv_bfloat16* W, const __nv_bfloat16* X, float* Y, Shape sh) {
  // Tokens [0, 96) and the last 96 (a partial last tile): enough to see every row, tile edge and k-stage.
  const int m = blockIdx.x * blockDim.x + threadIdx.x, n = blockIdx.y < 96 ? blockIdx.y : sh.T - 192 + blockIdx.y;
  if (m >= sh.M) return;
  float acc = 0;
  for (int k = 0; k < sh.K; ++k) acc += __bfloat162float(W[size_t(m) * sh.K + k]) * __bfloat162float(X[size_t(n) * sh.K + k]);
  Y[size_t(n) * sh.M + m] = acc;
}

__global__ void fill(__nv_bfloat16* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
    p[i] = __float2bfloat16((float(h & 0xFFFF) / 65536.f - 0.5f) * 0.25f);
  }
}

static PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  void* f = nullptr;
  cudaDriverEntryPointQueryResult q{};
  CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || !f) { printf("no cuTensorMapEncodeTiled\n"); std::exit(1); }
  return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
}
static CUtensorMap map2d(const void* base, int rows, int cols, int box_rows) {
  CUtensorMap m{};
  const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(cols) * 2};
  const cuuint32_t box[2] = {cuuint32_t(BK), cuuint32_t(box_rows)};
  const cuuint32_t elem[2] = {1, 1};
  CUresult r = encode_fn()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box, elem,
                           CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                           CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) { printf("encode failed %d (%d x %d box %d)\n", int(r), rows, cols, box_rows); std::exit(1); }
  return m;
}

template <int BN, int S>
static float run(const Shape& sh, const __nv_bfloat16* W, const __nv_bfloat16* X, __nv_bfloat16* Y, int ctas, int store,
                 int reps, int bbc = 0) {
  const CUtensorMap mw = map2d(W, sh.M, sh.K, BM), mx = map2d(X, sh.T, sh.K, BN);
  const size_t smem = size_t(S) * (BM + BN) * BK * 2 + 1024;
  CK(cudaFuncSetAttribute(gemm<BN, S>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  gemm<BN, S><<<ctas, 384, smem>>>(mw, mx, Y, sh, store, bbc);
  CK(cudaDeviceSynchronize());
  CK(cudaEventRecord(e0));
  for (int r = 0; r < reps; ++r) gemm<BN, S><<<ctas, 384, smem>>>(mw, mx, Y, sh, store, bbc);
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  return ms * 1000.f / reps;
}

int main(int argc, char** argv) {
  cudaDeviceProp pr;
  CK(cudaGetDeviceProperties(&pr, 0));
  const int sms = pr.multiProcessorCount;
  printf("%s, %d SMs\n", pr.name, sms);
  // Qwen3-8B's matrices (hidden 4096, q 4096 + k/v 1024 each, intermediate 12288) and Llama-3.2-1B's.
  struct Case { const char* name; Shape sh; };
  std::vector<Case> cases = {
      {"q8b qkv", {6144, 4096, 2000}},     {"q8b o", {4096, 4096, 2000}},   {"q8b gate_up", {24576, 4096, 2000}},
      {"q8b down", {4096, 12288, 2000}},   {"q8b gate_up T256", {24576, 4096, 256}},
      {"q8b gate_up T512", {24576, 4096, 512}}, {"l1b gate_up", {16384, 2048, 2000}}, {"l1b down", {2048, 8192, 2000}},
  };
  size_t wmax = 0, xmax = 0, ymax = 0;
  for (auto& c : cases) {
    wmax = std::max(wmax, size_t(c.sh.M) * c.sh.K);
    xmax = std::max(xmax, size_t(c.sh.T) * c.sh.K);
    ymax = std::max(ymax, size_t(c.sh.T) * c.sh.M);
  }
  __nv_bfloat16 *W, *X, *Y;
  float* R;
  CK(cudaMalloc(&W, wmax * 2));
  CK(cudaMalloc(&X, xmax * 2));
  CK(cudaMalloc(&Y, ymax * 2));
  CK(cudaMalloc(&R, ymax * 4));
  fill<<<1024, 256>>>(W, wmax, 1);
  fill<<<1024, 256>>>(X, xmax, 2);
  CK(cudaDeviceSynchronize());
  // Correctness: two shapes' outputs of 192 tokens against the fp32 reference.
  for (int ci : {0, 4}) {
    const Shape sh = cases[size_t(ci)].sh;
    ref_gemm<<<dim3((sh.M + 255) / 256, 192), 256>>>(W, X, R, sh);
    const char* vname[5] = {"BN256 S4 direct", "BN128 S6 direct", "BN256 S4 staged", "BN256 S3 staged, inputs by compute",
                            "BN256 S4 staged, inputs by compute"};
    for (int v = 0; v < 5; ++v) {
      CK(cudaMemset(Y, 0, ymax * 2));
      switch (v) {
        case 0: run<256, 4>(sh, W, X, Y, sms, 1, 1); break;
        case 1: run<128, 6>(sh, W, X, Y, sms, 1, 1); break;
        case 2: run<256, 4>(sh, W, X, Y, sms, 2, 1); break;
        case 3: run<256, 3>(sh, W, X, Y, sms, 2, 1, 1); break;
        default: run<256, 4>(sh, W, X, Y, sms, 2, 1, 1); break;
      }
      std::vector<__nv_bfloat16> y(size_t(sh.T) * sh.M);
      std::vector<float> r(y.size());
      CK(cudaMemcpy(y.data(), Y, y.size() * 2, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(r.data(), R, r.size() * 4, cudaMemcpyDeviceToHost));
      double maxe = 0, maxr = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        const int n = int(i / size_t(sh.M));
        if (n >= 96 && n < sh.T - 96) continue;
        maxe = std::max(maxe, double(std::fabs(__bfloat162float(y[i]) - r[i])));
        maxr = std::max(maxr, double(std::fabs(r[i])));
      }
      // bf16 output rounding: 2^-8 of the largest value; fp32 sums in another order add far less.
      printf("check %s %s: max |err| %.4g of max |y| %.4g -> %s\n", cases[size_t(ci)].name, vname[v], maxe, maxr,
             maxe <= maxr / 128 ? "ok" : "WRONG");
    }
  }
  printf("us (TFLOP/s); S: ring slots; staged: stores through shared memory; by compute: compute thread 0 loads the inputs\n");
  printf("%-18s %6s %6s %5s | %14s | %14s | %14s | %14s | %14s | %14s\n", "shape", "M", "K", "T", "BN256 S4 direct",
         "BN128 S6 direct", "BN256 S4 staged", "S3 stg by comp", "S4 stg by comp", "BN256 no store");
  for (auto& c : cases) {
    const double fl = 2.0 * c.sh.M * double(c.sh.K) * c.sh.T;
    const float v[6] = {run<256, 4>(c.sh, W, X, Y, sms, 1, 10),    run<128, 6>(c.sh, W, X, Y, sms, 1, 10),
                        run<256, 4>(c.sh, W, X, Y, sms, 2, 10),    run<256, 3>(c.sh, W, X, Y, sms, 2, 10, 1),
                        run<256, 4>(c.sh, W, X, Y, sms, 2, 10, 1), run<256, 4>(c.sh, W, X, Y, sms, 0, 10)};
    printf("%-18s %6d %6d %5d", c.name, c.sh.M, c.sh.K, c.sh.T);
    for (float x : v) printf(" | %7.1f (%4.0f)", x, fl / x / 1e6);
    printf("\n");
  }
  return 0;
}
