// The CUDA executor's private state and the helpers its source files share
// (program_executor.cpp: construction, run, KV copies; program_executor_timing.cpp:
// the bench's timed steps, single tasks). Not part of the executor's API.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "exec/common/run.h"
#include "exec/cuda/program_executor.h"
#include "exec/cuda/program_kernel.h"

namespace keel::exec::cuda {

struct ProgramExecutor::Impl {
  int device = 0;
  double watchdog_s = 5;
  std::vector<void*> owned;           // cudaMalloc'd
  std::vector<void*> pinned;          // cudaHostAlloc'd
  cudaStream_t stream = nullptr, ctl_stream = nullptr;
  uint8_t* workspace = nullptr;
  uint8_t* kv = nullptr;
  std::vector<uint8_t*> ptr;          // per buffer (device)
  std::vector<uint64_t> bytes;        // per buffer
  std::vector<uint8_t> dtype;         // per buffer
  prog::DevProgram P;
  size_t smem = 0;
  int32_t* host_ring = nullptr;       // pinned, mapped
  int32_t* host_count = nullptr;
  float* host_logprob = nullptr;      // pinned, mapped: the tokens' log-probabilities (Sequence::logprobs)
  int32_t* stop_one = nullptr;        // pinned source of the stop_request write
  uint8_t* embed_stage = nullptr;     // pinned, [batch][hidden] embedding rows of a launch setup
  float* capture = nullptr;           // device, allocated on the first capture run
  int32_t* capture_rows = nullptr;
  std::string gpu_name;
  uint64_t weight_bytes = 0;          // per step, stored dtypes
  bool per_op_ok = false;             // operators are contiguous per worker and in dependency order
  bool tall_tiles = false;            // a matmul tile of more than kMmRows rows: wgmma only (long variants)
  std::string per_op_why;
  std::vector<int32_t> last_tokens;
  uint64_t* step_ns = nullptr;        // device [step_ns_cap]
  const char* last_variant = "";      // the kernel variant of the last launch (kernel_variant_name)
  int32_t step_ns_cap = 0;
  std::string trace_next;             // trace_next_run(): the next run() writes this trace

  ~Impl() {
    if (stream) cudaStreamDestroy(stream);
    if (ctl_stream) cudaStreamDestroy(ctl_stream);
    for (void* d : owned) cudaFree(d);
    for (void* h : pinned) cudaFreeHost(h);
  }
};

namespace detail {

/// cudaMalloc'd and zeroed (at least 16 bytes), owned by `owned`.
void* device_alloc(size_t bytes, std::vector<void*>& owned);
/// A device error code's meaning (prog::kErr*).
const char* error_name(int e);
/// The launch setup of program.h for `seqs` (launch_state.h): host images of
/// the buffers it writes, uploaded over a workspace set on the device (zero,
/// activations 0xff); counters, status and CTA states zeroed. With
/// start_pos > 0 every sequence is placed at that position with its prompt
/// consumed (bench: the KV cache below it is whatever the arena holds); with
/// max_steps > 0 the launch runs that many steps (bench).
prog::DevProgram prepare(ProgramExecutor::Impl& I, const program::Program& p, const std::vector<Sequence>& seqs,
                         const RunOptions& opt, int start_pos = 0, int max_steps = 0);
/// Throws keel::Error with the device's error and every unfinished CTA's state.
void check_status(ProgramExecutor::Impl& I, const program::Program& p, const prog::DevProgram& P);
/// Points P at a trace buffer for the first `steps` steps of a launch (P.trace, P.trace_cap).
void arm_trace(ProgramExecutor::Impl& I, const program::Program& p, prog::DevProgram& P, int steps);
/// After the launch: the records as a Chrome/Perfetto trace at `path` (one row per CTA).
void write_trace(const program::Program& p, const prog::DevProgram& P, const std::string& path);

}  // namespace detail
}  // namespace keel::exec::cuda
