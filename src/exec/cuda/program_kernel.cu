// The persistent kernel that runs a program::Program (the execution model at
// the top of program/program.h): grid = n_workers CTAs, one per SM, all
// co-resident (cooperative launch). CTA w walks worker_tasks[worker_offsets[w]
// .. worker_offsets[w+1]) once per step.
//
// Warp roles. Warps 0..7 (compute): per task, thread 0 waits on each WaitDesc
// (ld.acquire.gpu polled with __nanosleep back-off, primitives.cuh), the eight
// warps run the task (its unit's device body, src/ops/<op>.cuh, dispatched by
// src/ops/ops.cuh), then thread 0 adds 1 to each
// signalled counter (red.release.gpu, cumulative over the CTA's writes that the
// barrier before it ordered). Warp 8 (loader): walks the same list, step after
// step, and copies every weight tile (weight_tile()) into the shared-memory ring
// with cp.async.bulk as soon as a stage is free, never looking at a counter
// (DESIGN invariant 6): while the compute warps wait for attention or for the
// last SM of an operator, the coming tasks' weights are already landing. It
// keeps at most P.max_inflight stages in flight and holds after a streaming
// task until the task's signals are published (P.loader_hold, hold_done): a
// gpu-scope release, and every other load of the SM, waits behind the SM's bulk
// copies in flight. The hold follows only this CTA's own warps.
//
// Warps 10 and 11 are idle: they complete the third warpgroup, whose registers
// the compute warps take over (setmaxnreg, run_cta).
//
// Warp 9 (signaller): adds 1 to each counter a finished task signals
// (red.release.gpu) while the compute warps go on with the next task: a release
// waits for the CTA's last writes to reach L2 (about a microsecond under a
// saturated weight stream), which no longer sits between two tasks. The compute
// warps hand over each finished task through two shared-memory slots and an
// mbarrier per slot (arrive: release, wait: acquire, both CTA scope), so the
// signaller's release is cumulative over every compute thread's writes of the task.
//
// Before step s > 0 the step gate waits for counter[step_counter] >=
// step_expected * s and stops when every sequence is done or s ==
// control.max_steps. A wait that sees no progress for the watchdog deadline, or
// a task that finds bad data, sets the abort flag; every CTA then leaves and
// records where it was (CtaState) for the host.
//
// The next task's descriptor and first two waits are loaded into warp 0's
// registers while the current task runs, so no L2 round trip for them sits
// between two tasks.
#include <algorithm>
#include <type_traits>

#include "exec/cuda/cuda_check.h"
#ifndef KEEL_KERNEL_VARIANT
#define KEEL_KERNEL_VARIANT decode_kernel  // program_kernel_batch.cu compiles the batch variant
#endif
#include "exec/cuda/program_kernel.h"
#include "ops/ops.cuh"
#include "program/smem_plan.h"

namespace keel::exec::cuda::prog {

// The compiler plans the shared-memory layout and the tiles with these (program/smem_plan.h).
static_assert(program::kKernelWarps == kWarps && program::kKernelMaxHeadDim == kMaxHeadDim &&
              program::kMaxRingStages == kMaxRingStages && program::kMaxStageRows <= 32767);

namespace {

constexpr int kScratchFloats = 64;
constexpr int kSideRegs = 40, kComputeRegs = 232;  // setmaxnreg, see run_cta
static_assert(kSideRegs * 128 + kComputeRegs * kThreads <= 168 * kBlockThreads && kBlockThreads == kThreads + 128);

struct alignas(16) SmemStatic {
  uint64_t full[kMaxRingStages];
  uint64_t empty[kMaxRingStages];
  uint32_t desc[2][sizeof(TaskDesc) / 4];  // compute: current / next descriptor
  TileDesc tile[2];                        // compute: current / next task's weight tile
  float scratch[kScratchFloats];
  float red[4 * kWarps];
  int go;
  volatile int quit;
  volatile uint32_t issued;
  // compute -> signaller: task of hand-over k in slot k & 1 (-1: leave), its
  // mbarrier done[k & 1] (one arrival per compute warp); sig_done = hand-overs
  // the signaller has finished (a slot is reused only after that).
  uint64_t done[2];
  volatile int32_t sig_task[2];
  volatile uint32_t sig_entry[2];  // its entry number (for `released`)
  // Entry number (step * list length + position + 1) of the latest task whose
  // signals are published (or that has none); raised with atomicMax by the
  // compute warps and the signaller. The loader's hold (P.loader_hold) reads it.
  uint32_t released;
  volatile uint32_t gate;     // entry number the compute warps have read the inputs of (RingView::gate)
  volatile uint32_t started;  // entry number the compute warps run now (or ran last)
  volatile uint32_t sig_done;
  uint32_t sig_seq;  // compute: hand-overs published so far
  int32_t pos[kPosCache];     // the first sequences' positions, read at each step's start
  int32_t pages[kPageCache];  // the page table when it fits (it is fixed for a launch)
#if KEEL_MM && KEEL_ATTN_STREAM
  // compute: the deferred matmul tile's operands (mm_defer; raw bytes: the
  // struct's default member initializers are not allowed in __shared__ memory)
  alignas(16) unsigned char mm_args[sizeof(MmTileArgs)];
#endif
};
static_assert(std::is_trivially_copyable_v<MmTileArgs>);

/// Compute warps, every thread: hands `task` (or -1: the signaller leaves) to the
/// signaller once this warp's writes are issued.
__device__ __forceinline__ void hand_over(SmemStatic& S, int32_t task, uint32_t entry = 0) {
  const uint32_t k = S.sig_seq;  // same value in every compute thread (written before a barrier)
  if (threadIdx.x == 0) {
    while (k >= 2 && S.sig_done < k - 1) {  // the slot's previous hand-over is signalled
    }
    S.sig_task[k & 1] = task;
    S.sig_entry[k & 1] = entry;
  }
  csync();  // the slot is written; every warp's task writes are issued
  if ((threadIdx.x & 31) == 0) dev::mbar_arrive(&S.done[k & 1]);
  if (threadIdx.x == 0) S.sig_seq = k + 1;
}

/// The signaller warp (lane 0 works): hand-over after hand-over, the finished
/// task's signals.
__device__ __forceinline__ void signaller(const DevProgram& P, SmemStatic& S) {
  if (threadIdx.x % 32 != 0) return;
  for (uint32_t k = 0;; ++k) {
    dev::mbar_wait(&S.done[k & 1], (k >> 1) & 1);
    const int32_t task = S.sig_task[k & 1];
    if (task < 0) return;
    const program::TaskDesc& t = P.tasks[task];
    const uint32_t n = __ldg(&t.signal_count), b = __ldg(&t.signal_begin);
    for (uint32_t j = 0; j < n; ++j) dev::red_release_add(P.counters + __ldg(P.signals + b + j), 1);
    atomicMax(&S.released, S.sig_entry[k & 1]);
    S.sig_done = k + 1;
  }
}

__device__ void record(const DevProgram& P, int step, int list_pos, int task, int reason, uint32_t counter,
                       uint32_t target) {
  CtaState& c = P.cta[blockIdx.x];
  c.step = step;
  c.list_pos = list_pos;
  c.task = task;
  c.reason = reason;
  c.counter = counter;
  c.target = target;
  c.value = reason == 2 || reason == 3 ? dev::ld_acquire(P.counters + counter) : 0;
}

/// Thread 0: waits until counters[c] >= target; on timeout or abort records the
/// CTA's state (and, on its own timeout, raises the error). Returns false to leave.
__device__ bool wait_or_leave(const DevProgram& P, uint32_t c, uint32_t target, int step, int list_pos, int task) {
  if (dev::wait_counter(P.counters + c, target, P.abort, P.timeout_ns)) return true;
  const bool aborted = *reinterpret_cast<volatile uint32_t*>(P.abort) != 0;
  record(P, step, list_pos, task, aborted ? 3 : 2, c, target);
  if (!aborted) dev_fail(P, kErrTimeout, task, int32_t(c));
  return false;
}

__device__ __forceinline__ const TaskDesc& as_desc(const uint32_t* words) {
  return *reinterpret_cast<const TaskDesc*>(words);
}

/// The loader warp: every weight tile of the CTA's tasks, in execution order,
/// step after step (persistent) or for one operator (per-op), until the
/// compute warps say quit.
/// Lanes 0..7 hold the 8 words of a TileDesc; every lane gets the whole tile.
__device__ __forceinline__ Tile tile_from_lanes(uint32_t word) {
  uint32_t w[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) w[k] = __shfl_sync(0xffffffffu, word, k);
  Tile T;
  static_assert(sizeof(Tile) == sizeof(w));
  memcpy(&T, w, sizeof w);
  return T;
}

__device__ __forceinline__ uint32_t tile_word(const DevProgram& P, uint32_t entry, int lane) {
  return lane < 8 ? __ldg(reinterpret_cast<const uint32_t*>(P.tiles + entry) + lane) : 0u;
}

/// Calls f(offset in the stage, global source, bytes) for each bulk transfer of
/// rows [r0, r0 + n) of tile T, spread over the loader's lanes: one per matrix
/// when rows are contiguous, else one per row segment.
template <class F>
__device__ __forceinline__ void piece_transfers(const Tile& T, int r0, int n, int lane, F&& f) {
  const uint32_t bytes = uint32_t(n) * T.seg;
  if (T.stride == T.seg) {
    if (lane < T.nmat) f(size_t(lane) * bytes, (lane == 0 ? T.base[0] : T.base[1]) + uint64_t(r0) * T.stride, bytes);
  } else {
    for (int k = lane; k < n * T.nmat; k += 32) {
      const int m = k / n, j = k % n;
      f(size_t(m) * bytes + size_t(j) * T.seg, (m == 0 ? T.base[0] : T.base[1]) + uint64_t(r0 + j) * T.stride, T.seg);
    }
  }
}

/// The loader warp waits for a phase of `bar`; the decision is lane 0's. False: quit.
__device__ __forceinline__ bool loader_wait(SmemStatic& S, uint64_t* bar, uint32_t parity, int lane) {
  for (;;) {
    int state = 0;  // 1: completed, 2: quit
    if (lane == 0) state = dev::mbar_test_wait(bar, parity) ? 1 : S.quit ? 2 : 0;
    state = __shfl_sync(0xffffffffu, state, 0);
    if (state) return state == 1;
  }
}

/// Before the next copy after the streaming entry `pending`: go on while
/// the compute warps have not started it (its release is far away: e.g. they
/// run attention, and the next task's weights may land meanwhile), else wait
/// until its signals are published. False: quit.
__device__ __forceinline__ bool hold_pending(SmemStatic& S, int lane, uint32_t& pending) {
  for (;;) {
    int state = 0;  // 1: published, 3: not started, 2: quit
    if (lane == 0)
      state = int32_t(*reinterpret_cast<volatile uint32_t*>(&S.released) - pending) >= 0 ? 1
              : int32_t(S.started - pending) < 0                                          ? 3
              : S.quit                                                                     ? 2
                                                                                           : 0;
    state = __shfl_sync(0xffffffffu, state, 0);
    if (state == 1) pending = 0;
    if (state) return state != 2;
  }
}

/// The loader's hold (P.loader_hold), after the last copy of entry `entry`: when
/// the next entry streams, mark `entry` pending (hold_pending decides before the
/// next copy); else wait until its signals are published and the next entry has
/// read its inputs. A gpu-scope release waits for the SM's bulk copies in
/// flight, so copies issued for the next task before the release would delay the
/// task's consumers by their whole transfer. False: quit.
__device__ __forceinline__ bool hold_done(const DevProgram& P, SmemStatic& S, int lane, uint32_t next_word, bool has_next,
                                          uint32_t entry, uint32_t& pending) {
  static_assert(offsetof(TileDesc, cap) == 28);  // word 7, low half
  const bool next_streams = has_next && (__shfl_sync(0xffffffffu, next_word, 7) & 0xffffu) != 0;
  if (next_streams) {  // only once the compute warps run it (hold_pending)
    pending = entry;
    return true;
  }
  // Before a task that streams nothing (attention), also until it has read its
  // inputs (RingView::gate), so its loads do not queue behind the copies.
  const bool gated = has_next;
  for (;;) {
    int state = 0;  // 1: go on, 2: quit
    if (lane == 0)
      state = int32_t(*reinterpret_cast<volatile uint32_t*>(&S.released) - entry) >= 0 &&
                      (!gated || int32_t(S.gate - (entry + 1)) >= 0)
                  ? 1
              : S.quit ? 2
                       : 0;
    state = __shfl_sync(0xffffffffu, state, 0);
    if (state) return state == 1;
  }
}

/// The loader's copies of a matmul tile (nk > 0 column chunks, sources `M`):
/// for each block of T.cap rows, nk stages, stage c holding column chunk c
/// (T.seg bytes per row) of each matrix's rows as TMA panels of kMmBoxCols
/// columns (program/smem_plan.h): one box per panel for a full block, boxes of
/// 16 rows for a shorter one (rows past the block's are loaded and ignored).
/// Same waits as the row-segment path. False: quit.
__device__ __noinline__ bool loader_chunks(const DevProgram& P, SmemStatic& S, char* ring, const Tile& T, int nk,
                                           const MmSource& M, int lane, uint32_t& seq, uint32_t& pending) {
  const uint32_t NS = uint32_t(P.n_stages), SB = P.stage_bytes, K = P.max_inflight;
  constexpr int kBoxBytes = program::kMmBoxCols * 2;  // one row of a panel
  const int ng = int(T.seg) / kBoxBytes, kc = int(T.seg) / 2;
  for (int r0 = 0; r0 < T.rows; r0 += T.cap) {
    const int n = min(int(T.cap), T.rows - r0);
    const bool full = n == T.cap;
    const int nbox = full ? 1 : (n + 15) / 16;  // boxes per panel
    const uint32_t bytes = uint32_t(T.nmat) * uint32_t(ng) * uint32_t((n + 15) / 16 * 16) * kBoxBytes;
    for (int c = 0; c < nk; ++c) {
      const uint32_t slot = seq % NS;
      if (K && seq >= K && !loader_wait(S, &S.full[(seq - K) % NS], ((seq - K) / NS) & 1, lane)) return false;
      if (seq >= NS && !loader_wait(S, &S.empty[slot], ((seq / NS) - 1) & 1, lane)) return false;
      if (pending && !hold_pending(S, lane, pending)) return false;
      char* dst = ring + size_t(slot) * SB;
      if (lane == 0) dev::mbar_arrive_expect_tx(&S.full[slot], bytes);
      __syncwarp();
      for (int k = lane; k < T.nmat * ng * nbox; k += 32) {
        const int m = k / (ng * nbox), g = (k / nbox) % ng, i = k % nbox;
        char* to = dst + (size_t(m * ng + g) * T.cap + i * 16) * kBoxBytes;
        const void* map = full ? M.full[m] : M.part[m];
        const int32_t x = M.col0 + c * kc + g * program::kMmBoxCols, y = M.row0 + r0 + i * 16;
        if (P.l2_hint) dev::tma_g2s_2d_stream(to, map, x, y, &S.full[slot], dev::policy_evict_first());
        else dev::tma_g2s_2d(to, map, x, y, &S.full[slot]);
      }
      ++seq;
      if (lane == 0) S.issued = seq;
    }
  }
  return true;
}

__device__ __forceinline__ void loader(const DevProgram& P, SmemStatic& S, char* ring, uint32_t begin, uint32_t i0, uint32_t i1,
                       bool persistent) {
  const int lane = threadIdx.x & 31;
  const uint32_t NS = uint32_t(P.n_stages), SB = P.stage_bytes, K = P.max_inflight;
  uint32_t seq = 0, pending = 0;  // pending: the held entry (hold_pending)
  uint32_t entry = 0;             // entry number (step * list length + position + 1) of entry i
  for (;;) {
    // A list without weight tiles would otherwise spin here forever after the
    // compute warps are done: look at quit once per step (lane 0 decides).
    if (__shfl_sync(0xffffffffu, lane == 0 ? int(S.quit) : 0, 0)) return;
    uint32_t next = i0 < i1 ? tile_word(P, begin + i0, lane) : 0u;  // the tile table, one entry ahead
    for (uint32_t i = i0; i < i1; ++i) {
      ++entry;
      const Tile T = tile_from_lanes(next);
      if (i + 1 < i1) next = tile_word(P, begin + i + 1, lane);
      if (T.cap == 0) continue;
      if constexpr (kMm) {
        const int nk = __ldg(P.tile_chunks + begin + i);
        if (nk > 0) {  // a matmul tile: per block of cap rows, nk column chunks
          const MmSource M = P.mm_src[begin + i];
          if (!loader_chunks(P, S, ring, T, nk, M, lane, seq, pending)) return;
          if (P.loader_hold && persistent && !hold_done(P, S, lane, next, i + 1 < i1, entry, pending)) return;
          continue;
        }
      }
      for (int r0 = 0; r0 < T.rows; r0 += T.cap) {
        const int n = min(T.cap, T.rows - r0);
        const uint32_t slot = seq % NS;
        // With P.max_inflight = K, wait for stage seq - K to have landed: a
        // gpu-scope release (the signaller's) and every other load of this SM
        // queue behind the copies in flight, so fewer in flight make them
        // cheaper. Then for the slot to be free.
        if (K && seq >= K && !loader_wait(S, &S.full[(seq - K) % NS], ((seq - K) / NS) & 1, lane)) return;
        if (seq >= NS && !loader_wait(S, &S.empty[slot], ((seq / NS) - 1) & 1, lane)) return;
        if (pending && !hold_pending(S, lane, pending)) return;
        char* dst = ring + size_t(slot) * SB;
        const uint32_t bytes = uint32_t(n) * T.seg;
        if (lane == 0) dev::mbar_arrive_expect_tx(&S.full[slot], bytes * uint32_t(T.nmat));
        __syncwarp();
        piece_transfers(T, r0, n, lane, [&](size_t off, const uint8_t* from, uint32_t b) {
          if (P.l2_hint) dev::bulk_g2s_stream(dst + off, from, b, &S.full[slot], dev::policy_evict_first());
          else dev::bulk_g2s(dst + off, from, b, &S.full[slot]);
        });
        ++seq;
        if (lane == 0) S.issued = seq;
      }
      if (P.loader_hold && persistent && !hold_done(P, S, lane, next, i + 1 < i1, entry, pending))
        return;
    }
    if (!persistent) return;  // per-op: one operator of one step
  }
}

/// Warp 0 loads the descriptor of list entry `i` into registers (lane l: word l)
/// and lanes 0..7 the entry's first two waits.
struct Prefetch {
  uint32_t word = 0;  // descriptor word `lane`
  uint32_t aux = 0;   // lanes 0..7: the first two waits; lanes 8..15: the tile
  __device__ void issue(const DevProgram& P, const uint32_t* list, uint32_t begin, uint32_t i, uint32_t len) {
    if (i >= len) return;
    const int lane = threadIdx.x & 31;
    word = __ldg(reinterpret_cast<const uint32_t*>(P.tasks + list[i]) + lane);
    if (lane < 8) aux = __ldg(reinterpret_cast<const uint32_t*>(P.wait_pre + size_t(begin + i) * 2) + lane);
    else if (lane < 16 && P.tiles) aux = __ldg(reinterpret_cast<const uint32_t*>(P.tiles + begin + i) + lane - 8);
  }
};

__device__ __forceinline__ void compute(const DevProgram& P, SmemStatic& S, char* ring, float* work, const uint32_t* list,
                        uint32_t begin, uint32_t i0, uint32_t i1, bool persistent) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const program::ProgramHeader& h = P.h;
  const program::SeqState* states = reinterpret_cast<const program::SeqState*>(P.ptr[h.buf_state]);
  const program::Control* ctl = reinterpret_cast<const program::Control*>(P.ptr[h.buf_control]);
  RingView R{ring, S.full, S.empty, P.n_stages, P.stage_bytes, 0, S.red, P.abort, P.timeout_ns, nullptr};
  R.pos = S.pos;
  R.pages = int64_t(h.batch) * h.pages_per_seq <= kPageCache ? S.pages : nullptr;
  R.gate = &S.gate;
  // The deferred matmul tiles (mm_defer), run below after the task's body: in
  // the long-context batch variant only, which batches over 16 and prefill
  // Programs run (their chunks outgrow the prefetch). Inlined, the wgmma loop
  // costs the kernel registers (spills 92/116 -> 684/2032 bytes), and the
  // short-context batch variant measured 2-7% slower at batch 8-16 with it.
  // Declared per task (below): its fields are then dead across the next
  // task's body and take no registers there (loop-carried, they were live
  // across every task body, attention's loop included).
  Prefetch pre;
  int trace_n = 0;
  for (int step = 0;; ++step) {
    // ---- step gate ----
    if (persistent) {
      csync();  // every thread has read `go` of the last task
      if (tid == 0) {
        S.go = 1;
        if (i1 == 0) {
          S.go = 0;
        } else if (step > 0 &&
                   !wait_or_leave(P, h.step_counter, h.step_expected * uint32_t(step), step, -1, -1)) {
          S.go = -1;
        } else {
          bool all_done = true;
          for (int b = 0; b < h.batch; ++b)
            all_done &= reinterpret_cast<const volatile int32_t*>(&states[b].done)[0] != 0;
          for (int b = 0; b < h.batch && b < kPosCache; ++b)  // final for this step: the gate acquired it
            S.pos[b] = reinterpret_cast<const volatile int32_t*>(&states[b].pos)[0];
          if (all_done || step >= reinterpret_cast<const volatile int32_t*>(&ctl->max_steps)[0]) S.go = 0;
        }
        if (S.go == 0) record(P, step, 0, -1, 1, 0, 0);
        if (S.go == 1 && blockIdx.x == 0 && P.step_ns && step < P.step_ns_cap)
          P.step_ns[step] = dev::globaltimer_ns();
      }
      csync();
      if (S.go != 1) return;
    } else {  // per-op: one operator of one step per launch; the positions are final
      if (tid < h.batch && tid < kPosCache) S.pos[tid] = reinterpret_cast<const volatile int32_t*>(&states[tid].pos)[0];
      csync();
    }
    if (warp == 0) pre.issue(P, list, begin, i0, i1);
    int cur = 0;
    for (uint32_t i = i0; i < i1; ++i) {
      // ---- descriptor and waits of this task (prefetched during the last one) ----
      uint32_t wd = 0, n_waits = 0;
      if (warp == 0) {
        S.desc[cur][lane] = pre.word;
        wd = pre.aux;
        if (lane >= 8 && lane < 16) reinterpret_cast<uint32_t*>(&S.tile[cur])[lane - 8] = pre.aux;
      }
      csync();
      const TaskDesc& t = as_desc(S.desc[cur]);
      R.tile = P.tiles ? &S.tile[cur] : nullptr;
      const uint32_t task = list[i];
      uint64_t t_start = 0, t_waited = 0;
      if (P.trace && tid == 0) t_start = dev::globaltimer_ns();
      // Work that does not depend on this step's producers, done before the wait
      // (the unit's DeviceOp::pre_wait): e.g. the attention task's K/V rows of
      // earlier positions, a norm-matvec task's norm weights.
      pre_wait(P, t, work, R);
      if (warp == 0) {
        // lanes 0..7 hold (counter, expected, offset, n_waits) of the first two waits
        const uint32_t c0 = __shfl_sync(0xffffffffu, wd, 0), e0 = __shfl_sync(0xffffffffu, wd, 1);
        const int32_t o0 = int32_t(__shfl_sync(0xffffffffu, wd, 2));
        n_waits = __shfl_sync(0xffffffffu, wd, 3);
        const uint32_t c1 = __shfl_sync(0xffffffffu, wd, 4), e1 = __shfl_sync(0xffffffffu, wd, 5);
        const int32_t o1 = int32_t(__shfl_sync(0xffffffffu, wd, 6));
        pre.issue(P, list, begin, i + 1, i1);  // the next task's, in flight while this one runs
        if (lane == 0) {
          S.go = 1;
          if (persistent) {
            for (uint32_t k = 0; k < n_waits && S.go == 1; ++k) {
              uint32_t c, e;
              int32_t o;
              if (k == 0) c = c0, e = e0, o = o0;
              else if (k == 1) c = c1, e = e1, o = o1;
              else {
                const program::WaitDesc w = P.waits[t.wait_begin + k];
                c = w.counter, e = w.expected, o = w.offset;
              }
              const int64_t target = int64_t(e) * (int64_t(step) + o);
              if (target > 0 && !wait_or_leave(P, c, uint32_t(target), step, int(i), int(task))) S.go = -1;
            }
          }
          if (P.trace) t_waited = dev::globaltimer_ns();
        }
      }
      csync();
      if (S.go != 1) return;
      const uint32_t entry = uint32_t(step) * (i1 - i0) + (i - i0) + 1;
      R.entry = entry;
#if KEEL_DIAG_MM
      if (tid == 0) R.dg_waited = t_waited;
#endif
      if (tid == 0) S.started = entry;
      MmCall mm;
#if KEEL_MM && KEEL_ATTN_STREAM
      mm.args = reinterpret_cast<MmTileArgs*>(S.mm_args);
      R.mm = &mm;
#endif
      run_task(P, t, int32_t(task), work, S.scratch, R);
      if constexpr (kMm && KEEL_ATTN_STREAM != 0) mm_run_deferred(P, R, mm, work);
      uint64_t t_ran = 0;
      if (P.trace && tid == 0) t_ran = dev::globaltimer_ns();
      if (tid == 0) S.gate = entry;
      if (persistent && t.signal_count > 0) {
        hand_over(S, int32_t(task), entry);  // ends with a barrier
      } else {
        if (tid == 0) atomicMax(&S.released, entry);
        csync();
      }
      if (tid == 0) {
        if (cta_stop() != 0) {
          record(P, step, int(i), int(task), P.status->task == int32_t(task) ? 4 : 3, 0, 0);
          S.go = -1;
        }
        if (P.trace && trace_n < P.trace_cap) {
          uint64_t* e = P.trace + (size_t(blockIdx.x) * P.trace_cap + trace_n) * kTraceWords;
          e[0] = uint64_t(i) | (uint64_t(step) << 32);
          e[1] = t_start;
          e[2] = t_waited;
          e[3] = R.t_prep;
          e[4] = R.t_first;
          e[5] = dev::globaltimer_ns();
          e[6] = t_ran;
          e[7] = R.t_last;
          R.t_prep = R.t_first = R.t_last = 0;
          ++trace_n;
        }
      }
      cur ^= 1;
      csync();
      if (S.go != 1) return;
    }
    if (!persistent) return;
  }
}

__device__ __forceinline__ void run_cta(const DevProgram& P, int op_filter) {
  // The batch kernel's TMA panels need 1024-byte aligned stages (checked below).
  extern __shared__ __align__(kMm ? 1024 : 128) unsigned char dyn_smem[];
  __shared__ SmemStatic S;
  char* ring = reinterpret_cast<char*>(dyn_smem);
  float* work = reinterpret_cast<float*>(dyn_smem + size_t(P.n_stages) * P.stage_bytes);
  const uint32_t begin = P.worker_offsets[blockIdx.x], len = P.worker_offsets[blockIdx.x + 1] - begin;
  const uint32_t* list = P.worker_tasks + begin;
  uint32_t i0 = 0, i1 = len;
  if (op_filter >= 0) {
    const uint2 r = P.op_range[size_t(blockIdx.x) * P.h.n_ops + op_filter];
    i0 = r.x;
    i1 = r.x + r.y;
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < P.n_stages; ++s) {
      dev::mbar_init(&S.full[s], 1);
      dev::mbar_init(&S.empty[s], kWarps);
    }
    dev::fence_mbar_init();
    dev::mbar_init(&S.done[0], kWarps);
    dev::mbar_init(&S.done[1], kWarps);
    dev::fence_mbar_init();
    S.quit = 0;
    S.issued = 0;
    S.sig_done = 0;
    S.released = 0;
    S.gate = 0;
    S.started = 0;
    S.sig_seq = 0;
    cta_stop() = 0;
  }
  {  // the page table is written by the host before the launch and fixed during it
    const int32_t n = P.h.batch * P.h.pages_per_seq;
    const int32_t* pt = reinterpret_cast<const int32_t*>(P.ptr[P.h.buf_page_table]);
    if (n <= kPageCache)
      for (int32_t i = threadIdx.x; i < n; i += blockDim.x) S.pages[i] = pt[i];
  }
  __syncthreads();
  if constexpr (kMm) {  // TMA panels: 1024-byte aligned stages (the swizzle repeats every 1 KiB)
    if (P.n_stages > 0 && (dev::smem_addr(ring) & (program::kMmStageAlign - 1)) != 0) {
      if (threadIdx.x == 0) dev_fail(P, kErrSmemAlign, -1, int32_t(dev::smem_addr(ring)));
      return;
    }
  }
  // Registers: the CTA is launched at 168 per thread (384 threads, one per SM);
  // the third warpgroup (loader, signaller, two idle warps) needs few and hands
  // the rest to the two compute warpgroups (setmaxnreg; kSideRegs * 128 +
  // kComputeRegs * 256 <= 168 * 384). The two paths never merge again, so ptxas
  // allocates each under its own limit.
  if (threadIdx.x >= kThreads) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kSideRegs) : "memory");
    if (threadIdx.x >= kThreads + 64) {
      // idle: waits at the barrier below
    } else if (threadIdx.x >= kThreads + 32) {
      if (op_filter < 0) signaller(P, S);
    } else if (P.n_stages > 0) {
      loader(P, S, ring, begin, i0, i1, op_filter < 0);
    }
    __syncthreads();
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kComputeRegs) : "memory");
  compute(P, S, ring, work, list, begin, i0, i1, op_filter < 0);
  if (threadIdx.x == 0) S.quit = 1;
  if (op_filter < 0) hand_over(S, -1);  // the signaller leaves after the last signals
  __syncthreads();
  // Let every bulk copy that was issued land before the CTA's shared memory goes away.
  if (threadIdx.x == 0 && P.n_stages > 0) {
    // Stages [0, issued) were issued; wait for the last NS of them (earlier ones
    // were consumed, so they completed).
    const uint32_t issued = S.issued, NS = uint32_t(P.n_stages);
    for (uint32_t k = issued > NS ? issued - NS : 0; k < issued; ++k)
      dev::mbar_wait(&S.full[k % NS], (k / NS) & 1);
  }
}

__global__ void __launch_bounds__(kBlockThreads, 1) program_kernel(const __grid_constant__ DevProgram P) {
  run_cta(P, -1);
}

__global__ void __launch_bounds__(kBlockThreads, 1) op_kernel(const __grid_constant__ DevProgram P, int op) {
  run_cta(P, op);
}

__global__ void __launch_bounds__(kThreads, 1) single_task_kernel(const __grid_constant__ DevProgram P,
                                                                  uint32_t task) {
  extern __shared__ __align__(128) unsigned char dyn_smem[];
  __shared__ float scratch[kScratchFloats];
  __shared__ float red[4 * kWarps];
  __shared__ alignas(16) uint32_t desc_words[sizeof(TaskDesc) / 4];
  if (threadIdx.x < 32) desc_words[threadIdx.x] = reinterpret_cast<const uint32_t*>(P.tasks + task)[threadIdx.x];
  __syncthreads();
  DevProgram Q = P;
  Q.n_stages = 0;    // weights straight from global memory (no loader in this test kernel)
  Q.work_bytes = 0;  // and no K/V prefetch
  RingView R{nullptr, nullptr, nullptr, 0, 0, 0, red, P.abort, P.timeout_ns, nullptr};
  run_task(Q, as_desc(desc_words), int32_t(task), reinterpret_cast<float*>(dyn_smem + 0), scratch, R);
}

__global__ void tile_table_kernel(const __grid_constant__ DevProgram P, TileDesc* out) {
  const uint32_t n = P.worker_offsets[P.h.n_workers];
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < n; e += gridDim.x * blockDim.x)
    out[e] = weight_tile(P, P.tasks[P.worker_tasks[e]]);
}

}  // namespace

namespace KEEL_KERNEL_VARIANT {

void build_tile_table(const DevProgram& P, TileDesc* tiles, cudaStream_t stream) {
  tile_table_kernel<<<64, 256, 0, stream>>>(P, tiles);
  KEEL_CUDA_CHECK_LAUNCH("tile_table_kernel");
  KEEL_CUDA_CHECK(cudaStreamSynchronize(stream));
}

size_t static_smem_bytes() {
  cudaFuncAttributes a{};
  KEEL_CUDA_CHECK(cudaFuncGetAttributes(&a, program_kernel));
  return a.sharedSizeBytes;
}

int max_coresident_ctas(int device, size_t smem) {
  KEEL_CUDA_CHECK(cudaSetDevice(device));
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(program_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(op_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(single_task_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int per_sm = 0, sms = 0;
  KEEL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, program_kernel, kBlockThreads, smem));
  KEEL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return per_sm * sms;
}

void launch_program(const DevProgram& P, size_t smem, cudaStream_t stream) {
  void* args[] = {const_cast<DevProgram*>(&P)};
  KEEL_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(program_kernel), dim3(P.h.n_workers),
                                              dim3(kBlockThreads), args, smem, stream));
  KEEL_CUDA_CHECK_LAUNCH("program_kernel");
}

void launch_op(const DevProgram& P, int op, size_t smem, cudaStream_t stream) {
  op_kernel<<<P.h.n_workers, kBlockThreads, smem, stream>>>(P, op);
  KEEL_CUDA_CHECK_LAUNCH("op_kernel");
}

void launch_single_task(const DevProgram& P, uint32_t task, size_t smem, cudaStream_t stream) {
  single_task_kernel<<<1, kThreads, smem, stream>>>(P, task);
  KEEL_CUDA_CHECK_LAUNCH("single_task_kernel");
}

}  // namespace KEEL_KERNEL_VARIANT

}  // namespace keel::exec::cuda::prog
