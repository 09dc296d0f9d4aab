// What the CPU twins of the opcodes (each unit's run_cpu, src/ops/<op>_cpu.cpp)
// run against: the TaskContext (a base pointer and dtype per buffer, the
// counters, the Step hooks) and the dispatcher run_task. Each twin reads only
// its TaskDesc and the buffers it names, and rounds where the GPU does: bf16
// normed inputs, raw q/k/v projections, q after its epilogue, K/V, attention
// output and MLP hidden; fp32 residual stream, accumulation, q/k head norm and
// RoPE, softmax and logits.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "program/program.h"
#include "core/dtype.h"

namespace keel::exec::cpu {

using program::Program;
using program::TaskDesc;

/// Host hooks the Step task calls (the GPU instead writes the ring and lets
/// the host poll it).
struct StepHooks {
  /// Called with the logits of sequence b for the token it processed this step,
  /// before any sampling transform. May be empty.
  std::function<void(int b, const float* logits)> capture;
  /// Called when sequence b emits a token, with its log-probability when the
  /// sequence asked for them (SeqState::want_logprob; else NaN).
  std::function<void(int b, int32_t token, float logprob)> on_token;
};

/// What a task needs to find its operands: a base pointer and dtype per buffer.
struct TaskContext {
  const Program* p = nullptr;
  std::vector<uint8_t*> ptr;   // per buffer id (weights: the bound tensor)
  std::vector<DType> dtype;    // per buffer id (weights: the stored dtype)
  const StepHooks* hooks = nullptr;
  /// The Program's counters (the Attention tasks add to their arrival counter).
  std::atomic<uint32_t>* counters = nullptr;

  template <class T>
  T* as(int32_t buf) const { return reinterpret_cast<T*>(ptr[size_t(buf)]); }
};

/// Runs one task by opcode: its unit's CPU twin (Op::run_cpu).
void run_task(const TaskContext& c, const TaskDesc& t);

}  // namespace keel::exec::cpu
