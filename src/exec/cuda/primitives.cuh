// Device primitives of the megakernel, each a few PTX instructions:
//  * counters in global memory: signal = red.release.gpu (a producer's writes
//    become visible before the count), wait = ld.acquire.gpu polled with a
//    __nanosleep back-off; a wait gives up after a deadline (the watchdog) and
//    reports it instead of hanging;
//  * mbarriers and cp.async.bulk (the copy engine), from which the weight ring
//    is built: a loader warp copies weight tiles global -> shared into a ring of
//    stages, each completing on its "full" mbarrier; compute warps release a
//    stage by arriving on its "empty" mbarrier.
// Sizes and addresses given to cp.async.bulk must be multiples of 16 bytes.
#pragma once

#include <cstdint>

namespace keel::exec::cuda::dev {

/// d += a . b on tensor cores: mma.sync m16n8k16, bf16 inputs, fp32
/// accumulators (a: 4 registers of A's 16 x 16 fragment, b0 b1: B's 16 x 8).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// d += a (16 x 8, row) * b (8 x 8, col) on tensor cores, bf16 in, fp32
/// accumulate: a0 = rows r, a1 = rows r + 8 (columns 2 (lane % 4) + {0, 1}),
/// b0 = column r (rows 2 (lane % 4) + {0, 1}); r = lane / 4.
__device__ __forceinline__ void mma_bf16_k8(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(b0));
}

// ---- global counters -------------------------------------------------------

__device__ __forceinline__ uint32_t ld_acquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void red_release_add(uint32_t* p, uint32_t v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// Atomic add with acquire + release semantics at GPU scope; returns the old value.
__device__ __forceinline__ uint32_t atom_add_acq_rel(uint32_t* p, uint32_t v) {
  uint32_t old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

__device__ __forceinline__ uint64_t globaltimer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/// Spins until *c >= target (wrap-safe signed compare). Returns false when
/// `*abort` becomes non-zero or nothing changed for `timeout_ns`; then the
/// caller records its state and leaves. Call from one thread.
__device__ __forceinline__ bool wait_counter(const uint32_t* c, uint32_t target,
                                             const volatile uint32_t* abort,
                                             uint64_t timeout_ns) {
  uint32_t v = ld_acquire(c);
  if (int32_t(v - target) >= 0) return true;
  uint32_t sleep = 32;
  uint64_t start = globaltimer_ns();
  uint32_t last = v;
  for (int spin = 0;; ++spin) {
    __nanosleep(sleep);
    if (sleep < 256) sleep *= 2;
    v = ld_acquire(c);
    if (int32_t(v - target) >= 0) return true;
    if ((spin & 63) == 63) {
      if (*abort) return false;
      uint64_t now = globaltimer_ns();
      if (v != last) {
        last = v;
        start = now;
      } else if (now - start > timeout_ns) {
        return false;
      }
    }
  }
}

// ---- mbarriers and bulk copies --------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}

/// Makes mbarrier inits visible to the async proxy (the copy engine).
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

/// Non-blocking probe of a phase (never suspends the thread).
__device__ __forceinline__ bool mbar_test_wait(uint64_t* bar, uint32_t parity) {
  uint32_t ok;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      " selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return ok != 0;
}

/// Waits for a phase by polling test_wait: try_wait may suspend the thread for
/// a hardware-chosen time after the phase completes, which measured as a
/// fixed cost per ring stage on the critical path.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  while (!mbar_test_wait(bar, parity)) {
  }
}

/// Bulk copy global -> shared, completing `bytes` of transaction on `bar`.
/// dst, src and bytes must be 16-byte aligned / multiples of 16.
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes,
                                         uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

/// Same with an L2 evict-first hint: weights are read once per step.
__device__ __forceinline__ void bulk_g2s_stream(void* dst, const void* src, uint32_t bytes,
                                                uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], "
      "[%1], %2, [%3], %4;" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}

/// A TMA tensor copy: the box of a 2-D tensor map (a CUtensorMap in global
/// memory) at element coordinates (x: column, y: row) into `dst`, completing
/// on `bar`, with an L2 cache policy (policy_evict_first()) or none.
__device__ __forceinline__ void tma_g2s_2d(void* dst, const void* map, int32_t x, int32_t y, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          smem_addr(dst)),
      "l"(map), "r"(x), "r"(y), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ void tma_g2s_2d_stream(void* dst, const void* map, int32_t x, int32_t y, uint64_t* bar,
                                                  uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, {%2, "
      "%3}], [%4], %5;" ::"r"(smem_addr(dst)),
      "l"(map), "r"(x), "r"(y), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}

__device__ __forceinline__ uint64_t policy_evict_first() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}

// ---- the weight ring -------------------------------------------------------

/// A ring of `kStages` shared-memory stages of `stage_bytes` each. The loader
/// (one thread) calls acquire() -> fills with bulk copies on full[s] after
/// arrive_expect_tx; consumers wait full(s, phase), use, then release() (each of
/// `consumers` arrives once on empty[s]). Stage k of the sequence uses slot
/// k % kStages with phase (k / kStages) & 1.
template <int kStages>
struct Ring {
  uint64_t full[kStages];
  uint64_t empty[kStages];

  __device__ void init(uint32_t consumers) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], consumers);
    }
    fence_mbar_init();
  }
  /// Loader: waits until slot of sequence number k is free.
  __device__ __forceinline__ void wait_empty(uint32_t k) {
    if (k >= kStages) mbar_wait(&empty[k % kStages], ((k / kStages) - 1) & 1);
  }
  /// Consumer: waits until sequence number k's data has landed.
  __device__ __forceinline__ void wait_full(uint32_t k) {
    mbar_wait(&full[k % kStages], (k / kStages) & 1);
  }
  __device__ __forceinline__ void release(uint32_t k) { mbar_arrive(&empty[k % kStages]); }
};

// ---- small math ------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace keel::exec::cuda::dev
