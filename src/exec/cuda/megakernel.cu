// The persistent megakernel and its per-op twin. One CTA per SM runs that SM's
// task list for every step of the launch: warp 8 (the loader) walks the list
// ahead and streams each matvec task's weight rows into a ring of shared-memory
// stages with cp.async.bulk, never waiting on activation counters (so HBM keeps
// streaming across operator boundaries); warps 0..7 wait for each task's input
// counter (ld.acquire + back-off), run the task from tasks.cuh and signal its
// counter (red.release). A wait that sees no progress for Params::timeout_ns
// stops every CTA and leaves per-SM state for the host (the watchdog).
//
// The per-op kernel runs the same code with waits off and one stage selected;
// the host launches it once per stage (and can capture those launches in a
// CUDA graph).
#include <cuda_runtime.h>

#include "exec/cuda/cuda_check.h"
#include "exec/cuda/kernels.h"
#include "exec/cuda/tasks.cuh"

namespace keel::exec::cuda {
namespace {

using namespace dev;

struct alignas(16) SmemStatic {
  uint64_t full[kMaxRingStages];
  uint64_t empty[kMaxRingStages];
  float red[kComputeWarps];
  float red2[2][kComputeWarps];
  float redv[kComputeWarps];
  int redi[kComputeWarps];
  int flag, tok, abort, stop;
  volatile int quit;
  volatile uint32_t issued;
};

__device__ __forceinline__ bool task_selected(const DevTask& t, int stage_filter) {
  return stage_filter < 0 || t.stage == stage_filter;
}

/// One ring stage of weights: `bytes` contiguous bytes at `src`.
struct ChunkRef {
  const char* src;
  uint32_t bytes;
};

/// Walks a CTA's weight chunks in execution order: steps, then its tasks, then
/// each matvec task's rows in chunk_rows() pieces. The loader's copy cursor and
/// the compute warps see the same sequence.
struct ChunkCursor {
  int s, i, r, i0;  // step, task index, next row (-1: task not started), first task
  __device__ bool next(const Params& P, const DevTask* tasks, int nt, int s1, int stage_filter,
                       uint32_t SB, ChunkRef* out) {
    while (s < s1) {
      if (i >= nt) {
        i = i0;
        r = -1;
        ++s;
        continue;
      }
      const DevTask t = tasks[i];
      if (!is_matvec(t.op) || !task_selected(t, stage_filter)) {
        ++i;
        continue;
      }
      if (r < 0) r = t.row0;
      if (r >= t.row1) {
        ++i;
        r = -1;
        continue;
      }
      const MatRef w = task_matrix(P.m, t);
      const int cap = chunk_rows(w, SB);
      const size_t row_bytes = size_t(w.ld) * wtype_size(w.wt);
      const int n = min(cap, t.row1 - r);
      out->src = w.base + size_t(r) * row_bytes;
      out->bytes = uint32_t(n * row_bytes);
      r += cap;
      return true;
    }
    return false;
  }
};

template <bool kPersistent>
__device__ void run_cta(const Params& P, int stage_filter) {
  extern __shared__ __align__(128) unsigned char dsmem[];
  __shared__ SmemStatic S;
  const int b = blockIdx.x, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const DevTask* gtasks = P.tasks + P.list_begin[b];
  int nt = P.list_begin[b + 1] - P.list_begin[b];
  int i_begin = 0;
  if (stage_filter >= 0) {  // per-op: only this stage's tasks (contiguous in the list)
    i_begin = P.stage_range[(size_t(b) * P.n_stage_ids + stage_filter) * 2];
    nt = P.stage_range[(size_t(b) * P.n_stage_ids + stage_filter) * 2 + 1];
  }
  const int NS = P.n_stages;
  const uint32_t SB = P.stage_bytes;
  char* ring = reinterpret_cast<char*>(dsmem);
  uint16_t* act = reinterpret_cast<uint16_t*>(dsmem + size_t(NS) * SB);
  float* res = reinterpret_cast<float*>(dsmem + size_t(NS) * SB + P.act_bytes);  // [max task rows]
  // The CTA's task list lives in shared memory: reading a descriptor from
  // global memory between two tasks put an L2 round trip on the critical path.
  DevTask* tasks = reinterpret_cast<DevTask*>(dsmem + size_t(NS) * SB + P.act_bytes + P.res_bytes);
  for (int k = i_begin * 9 + tid; k < nt * 9; k += blockDim.x)  // 9 words per DevTask
    reinterpret_cast<uint32_t*>(tasks)[k] = reinterpret_cast<const uint32_t*>(gtasks)[k];
  const StepIO& io = P.io;
  const DevModel& m = P.m;
  int s0, s1;
  if (kPersistent) {
    s0 = io.start_pos;
    s1 = io.end_pos;
  } else {
    s0 = *io.cur_step;
    s1 = s0 + 1;
  }
  if (tid == 0) {
    for (int s = 0; s < NS; ++s) {
      mbar_init(&S.full[s], 1);
      mbar_init(&S.empty[s], kComputeWarps);
    }
    fence_mbar_init();
    S.quit = 0;
    S.issued = 0;
    S.abort = 0;
    S.stop = 0;
  }
  __syncthreads();

  uint32_t seq = 0;  // ring sequence number (loader: issued; compute: consumed)
  if (warp == kComputeWarps) {
    // ---------------- loader warp ----------------
    // Lane 0 walks the CTA's chunk sequence (the same one the compute warps
    // consume) and issues one bulk copy per ring stage, without looking at any
    // activation counter. A second cursor runs P.l2_ahead chunks further ahead
    // and asks L2 to prefetch them, so HBM keeps streaming while the compute
    // warps wait on a dependency and the ring is full.
    if (lane == 0) {
      const uint64_t policy = policy_evict_first();
      ChunkCursor cur{s0, i_begin, -1, i_begin}, pf{s0, i_begin, -1, i_begin};
      uint32_t pf_seq = 0;
      ChunkRef c;
      while (cur.next(P, tasks, nt, s1, stage_filter, SB, &c)) {
        // Keep the L2 prefetch cursor ahead of this chunk.
        ChunkRef pc;
        while (pf_seq < seq + uint32_t(NS) + uint32_t(P.l2_ahead) &&
               pf.next(P, tasks, nt, s1, stage_filter, SB, &pc)) {
          if (pf_seq >= seq + uint32_t(NS)) bulk_prefetch_l2(pc.src, pc.bytes);
          ++pf_seq;
        }
        const int slot = seq % NS;
        if (seq >= uint32_t(NS)) {
          const uint32_t parity = ((seq / NS) - 1) & 1;
          while (!mbar_test_wait(&S.empty[slot], parity))
            if (S.quit) goto loader_done;
        }
        char* dst0 = ring + size_t(slot) * SB;
        mbar_arrive_expect_tx(&S.full[slot], c.bytes);
        for (uint32_t off = 0; off < c.bytes; off += P.copy_bytes) {
          const uint32_t nb = min(P.copy_bytes, c.bytes - off);
          if (P.l2_hint) bulk_g2s_stream(dst0 + off, c.src + off, nb, &S.full[slot], policy);
          else bulk_g2s(dst0 + off, c.src + off, nb, &S.full[slot]);
        }
        ++seq;
        S.issued = seq;
      }
    loader_done:;
    }
  } else {
    // ---------------- compute warps ----------------
    int trace_n = 0;
    for (int s = s0; s < s1; ++s) {
      if (kPersistent && s > s0) {
        if (tid == 0) {
          const uint32_t target = uint32_t(s - s0);
          if (!wait_counter(io.counters + P.step_counter, target, P.abort_flag, P.timeout_ns)) {
            SmState st{-1, s, P.step_counter, target, ld_acquire(io.counters + P.step_counter),
                       *P.abort_flag ? 2 : 1};
            P.sm_state[b] = st;
            atomicExch(P.abort_flag, 1u);
            S.abort = 1;
          } else {
            S.stop = *reinterpret_cast<volatile int*>(io.dev_stop);
          }
        }
        compute_sync();
        if (S.abort || S.stop) break;
      }
      for (int i = i_begin; i < nt; ++i) {
        const DevTask& t = tasks[i];
        if (!task_selected(t, stage_filter)) continue;
        uint64_t t_start = 0, t_waited = 0;
        if (tid == 0 && P.trace) t_start = globaltimer_ns();
        if (t.op == Op::ATTN) attention_prefetch(m, t, s, reinterpret_cast<float*>(act), P.attn_sub);
        NormPre np;
        norm_prefetch(m, t, np);
        if (kPersistent && t.wait_counter >= 0) {
          if (tid == 0) {
            const uint32_t target = t.wait_per_step * uint32_t(s - s0 + t.wait_offset);
            if (target > 0 &&
                !wait_counter(io.counters + t.wait_counter, target, P.abort_flag, P.timeout_ns)) {
              SmState st{i, s, t.wait_counter, target, ld_acquire(io.counters + t.wait_counter),
                         *P.abort_flag ? 2 : 1};
              P.sm_state[b] = st;
              atomicExch(P.abort_flag, 1u);
              S.abort = 1;
            }
          }
          compute_sync();
          if (S.abort) goto compute_done;
        }
        if (tid == 0 && P.trace) t_waited = globaltimer_ns();
        switch (t.op) {
          case Op::QKV:
          case Op::OPROJ:
          case Op::GATEUP:
          case Op::DOWN:
          case Op::LMHEAD: {
            const float pre = t.op == Op::LMHEAD ? 0.0f : epilogue_prefetch(m, io, t);
            const MatRef w = task_matrix(m, t);
            const DevLayer* L = t.op == Op::LMHEAD ? nullptr : &m.layers[t.layer];
            if (np.fast) prep_norm_pre(io.x, np, m.hidden, w.ld, m.rms_eps, act, S.red);
            else if (t.op == Op::QKV) prep_norm(io.x, L->attn_norm, m.hidden, w.ld, m.rms_eps, act, S.red);
            else if (t.op == Op::GATEUP) prep_norm(io.x, L->mlp_norm, m.hidden, w.ld, m.rms_eps, act, S.red);
            else if (t.op == Op::LMHEAD) prep_norm(io.x, m.final_norm, m.hidden, w.ld, m.rms_eps, act, S.red);
            else if (t.op == Op::OPROJ) prep_copy(io.attn, w.k, w.ld, act);
            else prep_copy(io.hbuf, w.k, w.ld, act);
            compute_sync();
            const int cap = chunk_rows(w, P.stage_bytes);
            float best_v = -INFINITY;
            int best_i = 0x7fffffff;
            int parity = 0;
            // Warps per row; > 1 keeps per-warp shares (no barrier per stage), except
            // in the LM head, whose rows are not stored.
            const int wpr = t.op == Op::LMHEAD ? 1 : max(1, kComputeThreads / cap / 32);
            for (int r = t.row0; r < t.row1; r += cap) {
              const int n = min(cap, t.row1 - r);
              const int slot = seq % NS;
              mbar_wait(&S.full[slot], (seq / NS) & 1);
              int row;
              float sum;
              const bool leader =
                  matvec_tile(ring + size_t(slot) * SB, w, n, cap, act, S.red2[parity], &row, &sum,
                              wpr > 1 ? res + (r - t.row0) * wpr : nullptr);
              parity ^= 1;
              __syncwarp();
              if (lane == 0) mbar_arrive(&S.empty[slot]);
              ++seq;
              if (leader) {
                if (t.op == Op::LMHEAD) {
                  if (sum > best_v || (sum == best_v && r + row < best_i)) {
                    best_v = sum;
                    best_i = r + row;
                  }
                } else {
                  res[r - t.row0 + row] = sum;
                }
              }
            }
            compute_sync();
            if (t.op != Op::LMHEAD) matvec_epilogue(m, io, t, res, wpr, pre);
            if (t.op == Op::LMHEAD) lm_finish(io, t, best_v, best_i, S.redv, S.redi);
            break;
          }
          case Op::ATTN: {
            attention_task(m, io, t, s, reinterpret_cast<float*>(act), P.attn_sub, &S.flag, true);
            break;
          }
          case Op::STEP: step_task(m, io, s, &S.tok, S.redv, S.redi); break;
          default: break;
        }
        compute_sync();
        if (tid == 0) {
          // The barrier above orders every thread's writes before this release
          // (release is cumulative), so no separate fence is needed.
          if (t.signal_counter >= 0) red_release_add(io.counters + t.signal_counter, 1);
          if (P.trace && trace_n < P.trace_cap) {
            uint64_t* e = P.trace + (size_t(b) * P.trace_cap + trace_n) * 4;
            e[0] = uint64_t(i) | (uint64_t(s) << 32);
            e[1] = t_start;
            e[2] = t_waited;
            e[3] = globaltimer_ns();
            ++trace_n;
          }
        }
      }
    }
  compute_done:
    if (tid == 0) {
      if (!S.abort) P.sm_state[b].reason = 0;
      S.quit = 1;
    }
  }
  __syncthreads();
  // Let every bulk copy that was issued land before the CTA's shared memory goes away.
  if (tid == 0) {
    const uint32_t issued = S.issued;
    for (uint32_t k = seq; k < issued; ++k) mbar_wait(&S.full[k % NS], (k / NS) & 1);
  }
}

__global__ void __launch_bounds__(kThreads, 1) megakernel(const __grid_constant__ Params P) {
  run_cta<true>(P, -1);
}

__global__ void __launch_bounds__(kThreads, 1) stage_kernel(const __grid_constant__ Params P,
                                                            int stage) {
  run_cta<false>(P, stage);
}

__global__ void embed_kernel(DevModel m, float* x, int tok) {
  for (int k = threadIdx.x; k < m.hidden; k += blockDim.x) {
    const size_t i = size_t(tok) * m.hidden + k;
    float v;
    if (m.etype == WType::F32) v = static_cast<const float*>(m.embed)[i];
    else if (m.etype == WType::F16) v = f16_to_f32(static_cast<const uint16_t*>(m.embed)[i]);
    else v = bf16_to_f32(static_cast<const uint16_t*>(m.embed)[i]);
    x[k] = v;
  }
}

}  // namespace

int prepare_kernels(size_t dyn_smem) {
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(megakernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(dyn_smem)));
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(stage_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(dyn_smem)));
  int blocks = 0;
  KEEL_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, megakernel, kThreads, dyn_smem));
  return blocks;
}

void launch_megakernel(const Params& p, int grid, size_t dyn_smem, void* stream) {
  Params copy = p;
  void* args[] = {&copy};
  KEEL_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(megakernel), dim3(grid),
                                              dim3(kThreads), args, dyn_smem,
                                              static_cast<cudaStream_t>(stream)));
  KEEL_CUDA_CHECK_LAUNCH("megakernel");
}

void launch_stage(const Params& p, int grid, size_t dyn_smem, int stage, void* stream) {
  stage_kernel<<<grid, kThreads, dyn_smem, static_cast<cudaStream_t>(stream)>>>(p, stage);
  KEEL_CUDA_CHECK_LAUNCH("stage_kernel");
}

void launch_embed(const DevModel& m, float* x, int token, void* stream) {
  embed_kernel<<<1, 256, 0, static_cast<cudaStream_t>(stream)>>>(m, x, token);
  KEEL_CUDA_CHECK_LAUNCH("embed_kernel");
}

}  // namespace keel::exec::cuda
