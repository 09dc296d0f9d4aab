// The persistent kernel that runs a compiler::Program (the execution model at
// the top of compiler/program.h): grid = n_workers CTAs, one per SM, all
// co-resident (cooperative launch). CTA w walks worker_tasks[worker_offsets[w]
// .. worker_offsets[w+1]) once per step. Per task: thread 0 waits on each
// WaitDesc (ld.acquire.gpu polled with __nanosleep back-off, primitives.cuh),
// the CTA runs the task (program_tasks.cuh), then thread 0 fences and adds 1 to
// each signalled counter (red.release.gpu). Before step s > 0 the step gate
// waits for counter[step_counter] >= step_expected * s and stops when every
// sequence is done or s == control.max_steps. A wait that sees no progress for
// the watchdog deadline, or a task that finds bad data, sets the abort flag;
// every CTA then leaves and records where it was (CtaState) for the host.
#include <algorithm>

#include "exec/cuda/cuda_check.h"
#include "exec/cuda/program_kernel.h"
#include "exec/cuda/program_tasks.cuh"

namespace keel::exec::cuda::prog {

namespace {

constexpr int kScratchFloats = 64;

/// Copies the 128-byte TaskDesc into shared memory (first warp).
__device__ __forceinline__ void load_desc(TaskDesc* dst, const TaskDesc* src) {
  static_assert(sizeof(TaskDesc) == 32 * 4);
  if (threadIdx.x < 32)
    reinterpret_cast<uint32_t*>(dst)[threadIdx.x] = reinterpret_cast<const uint32_t*>(src)[threadIdx.x];
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

__global__ void __launch_bounds__(kThreads, 1) program_kernel(const DevProgram P) {
  extern __shared__ float4 dyn_smem[];
  float* smem = reinterpret_cast<float*>(dyn_smem);
  __shared__ float scratch[kScratchFloats];
  __shared__ alignas(16) uint32_t desc_words[sizeof(TaskDesc) / 4];  // raw: no dynamic init in shared
  TaskDesc& desc = *reinterpret_cast<TaskDesc*>(desc_words);
  __shared__ int go;
  const compiler::ProgramHeader& h = P.h;
  const uint32_t begin = P.worker_offsets[blockIdx.x], len = P.worker_offsets[blockIdx.x + 1] - begin;
  const uint32_t* list = P.worker_tasks + begin;
  const compiler::SeqState* states = reinterpret_cast<const compiler::SeqState*>(P.ptr[h.buf_state]);
  const compiler::Control* ctl = reinterpret_cast<const compiler::Control*>(P.ptr[h.buf_control]);
  for (int step = 0;; ++step) {
    // ---- step gate ----
    __syncthreads();  // every thread has read `go` of the last task
    if (threadIdx.x == 0) {
      go = 1;
      if (len == 0) {
        go = 0;
      } else if (step > 0 &&
                 !wait_or_leave(P, h.step_counter, h.step_expected * uint32_t(step), step, -1, -1)) {
        go = -1;
      } else {
        bool all_done = true;
        for (int b = 0; b < h.batch; ++b)
          all_done &= reinterpret_cast<const volatile int32_t*>(&states[b].done)[0] != 0;
        if (all_done || step >= reinterpret_cast<const volatile int32_t*>(&ctl->max_steps)[0]) go = 0;
      }
      if (go == 0) record(P, step, 0, -1, 1, 0, 0);
    }
    __syncthreads();
    if (go != 1) return;
    // ---- the worker's tasks of this step ----
    for (uint32_t i = 0; i < len; ++i) {
      const uint32_t task = list[i];
      load_desc(&desc, P.tasks + task);
      __syncthreads();
      if (threadIdx.x == 0) {
        go = 1;
        for (uint32_t k = 0; k < desc.wait_count && go == 1; ++k) {
          const compiler::WaitDesc w = P.waits[desc.wait_begin + k];
          const int64_t target = int64_t(w.expected) * (int64_t(step) + w.offset);
          if (target > 0 && !wait_or_leave(P, w.counter, uint32_t(target), step, int(i), int(task))) go = -1;
        }
      }
      __syncthreads();
      if (go != 1) return;
      run_task(P, desc, int32_t(task), smem, scratch);
      __syncthreads();
      if (threadIdx.x == 0) {
        if (*reinterpret_cast<volatile uint32_t*>(P.abort) != 0) {
          record(P, step, int(i), int(task), P.status->task == int32_t(task) ? 4 : 3, 0, 0);
          go = -1;
        } else {
          __threadfence();  // the CTA's writes (ordered before by bar.sync) before the counts
          for (uint32_t k = 0; k < desc.signal_count; ++k)
            dev::red_release_add(P.counters + P.signals[desc.signal_begin + k], 1);
        }
      }
      __syncthreads();
      if (go != 1) return;
    }
  }
}

__global__ void __launch_bounds__(kThreads, 1) single_task_kernel(const DevProgram P, uint32_t task) {
  extern __shared__ float4 dyn_smem[];
  __shared__ float scratch[kScratchFloats];
  __shared__ alignas(16) uint32_t desc_words[sizeof(TaskDesc) / 4];
  TaskDesc& desc = *reinterpret_cast<TaskDesc*>(desc_words);
  load_desc(&desc, P.tasks + task);
  __syncthreads();
  run_task(P, desc, int32_t(task), reinterpret_cast<float*>(dyn_smem), scratch);
}

}  // namespace

size_t dynamic_smem_bytes(const compiler::ProgramHeader& h) {
  int64_t vec = std::max<int64_t>(h.hidden, h.intermediate);
  vec = std::max<int64_t>(vec, int64_t(h.n_heads) * h.head_dim);
  vec = std::max<int64_t>(vec, (int64_t(h.n_heads) + 2 * int64_t(h.n_kv_heads)) * h.head_dim);
  const int64_t attn = kMaxHeadDim + int64_t(kThreads / 32) * (kMaxHeadDim + 2);
  return size_t(std::max(vec, attn)) * sizeof(float);
}

int max_coresident_ctas(int device, size_t smem) {
  KEEL_CUDA_CHECK(cudaSetDevice(device));
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(program_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  KEEL_CUDA_CHECK(cudaFuncSetAttribute(single_task_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int per_sm = 0, sms = 0;
  KEEL_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, program_kernel, kThreads, smem));
  KEEL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return per_sm * sms;
}

void launch_program(const DevProgram& P, size_t smem, cudaStream_t stream) {
  void* args[] = {const_cast<DevProgram*>(&P)};
  KEEL_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(program_kernel), dim3(P.h.n_workers),
                                              dim3(kThreads), args, smem, stream));
  KEEL_CUDA_CHECK_LAUNCH("program_kernel");
}

void launch_single_task(const DevProgram& P, uint32_t task, size_t smem, cudaStream_t stream) {
  single_task_kernel<<<1, kThreads, smem, stream>>>(P, task);
  KEEL_CUDA_CHECK_LAUNCH("single_task_kernel");
}

}  // namespace keel::exec::cuda::prog
