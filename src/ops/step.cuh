// Step's device body (see step.h): the next token (prefill, greedy over the
// LM-head partials, or sample_token from exec/cuda/sampler.cuh, the twin of program::sample_token), the ring and
// the host's mapped copy, the stop rules, the position and the next embedding.
// No pre-wait work.
#pragma once

#include "exec/cuda/program_tasks.cuh"
#include "exec/cuda/sampler.cuh"
#include "ops/step.h"
#include "program/rules.h"
#include "program/sampling.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

using StepSlots = ops::StepOperands;  // Step's operand slots

/// The Step task of sequence b0 (see step.h; its CPU twin is step_cpu.cpp).
__device__ void step(const DevProgram& P, const TaskDesc& t, int32_t task, float* scratch) {
  const ProgramHeader& h = P.h;
  const int b = t.b0;
  const int64_t V = h.vocab, H = h.hidden;
  __shared__ int32_t s_next, s_go;
  SeqState* sp = bp<SeqState>(P, t.buf[StepSlots::kState]) + b;
  volatile SeqState& s = *sp;
  if (s.done) return;
  const int32_t pos = s.pos;
  // > 1: a prefill lane (no logits). Only the batch variants (kMm) run Programs
  // with prefill lanes (their batch is above 1): the decode variants fold it to 1.
  const int32_t lanes = kMm ? int32_t(program::lane_width(h, b)) : 1;
  float* logits = lanes == 1 ? bp<float>(P, t.buf[StepSlots::kLogits]) + b * V : nullptr;
  if (P.capture && lanes == 1) {
    float* dst = P.capture + (int64_t(b) * h.max_context + pos) * V;
    for (int64_t i = threadIdx.x; i < V; i += kThreads) dst[i] = logits[i];
    if (threadIdx.x == 0) P.capture_rows[b] = pos + 1;
  }
  const volatile Control& ctl = *bp<Control>(P, t.buf[StepSlots::kControl]);
  if (threadIdx.x == 0) s_go = ctl.stop_request;  // written by the host while the kernel runs
  csync();
  const bool stop = s_go != 0;
  csync();
  if (stop) {
    if (threadIdx.x == 0) {
      s.done = 1;
      s.stop_reason = int32_t(program::StopReason::Stopped);
    }
    return;
  }
  int32_t* tokens = bp<int32_t>(P, t.buf[StepSlots::kTokens]) + int64_t(b) * h.max_context;
  if (lanes > 1) {  // a prefill lane: `lanes` positions on, or done before the prompt's last position
    if (threadIdx.x == 0) {
      if (pos + lanes < s.prompt_len - 1) {
        s_next = tokens[pos + lanes], s_go = 1;
      } else {
        s.done = 1;
        s_go = 0;
      }
    }
  } else if (pos + 1 < s.prompt_len) {
    if (threadIdx.x == 0) s_next = tokens[pos + 1], s_go = 1;
  } else {
    if (program::context_full(pos + 1, h.max_context)) {  // a prompt of max_context tokens: nothing to emit
      if (threadIdx.x == 0) {
        s.done = 1;
        s.stop_reason = int32_t(program::StopReason::Context);
      }
      return;
    }
    int32_t next;
    if (s.temperature <= 0 && s.repetition_penalty == 1.0f) {
      next = 0;
      if (threadIdx.x == 0) {
        const float* part = bp<const float>(P, t.buf[StepSlots::kArgmax]) + int64_t(b) * t.arg[StepSlots::kNLmTiles] * 2;
        float best = -INFINITY;
        bool any = false;
        for (int tile = 0; tile < t.arg[StepSlots::kNLmTiles]; ++tile) {
          const int32_t idx = __float_as_int(part[tile * 2 + 1]);
          if (!any || part[tile * 2] > best || (part[tile * 2] == best && idx < next)) {
            best = part[tile * 2];
            next = idx;
            any = true;
          }
        }
      }
    } else {
      const program::SamplingParams sp = program::sampling_of(const_cast<const SeqState&>(s));  // set at launch
      const float u = program::rng_uniform(sp.seed, 0, uint32_t(s.draw0 + s.n_generated));
      next = sample_token(logits, V, tokens, pos + 1, sp, u, scratch);
    }
    // Block-uniform (one SeqState): program::token_logprob over the logits it
    // was drawn from, into the host's ring before the count below publishes it.
    if (s.want_logprob) publish_token_logprob(P, logits, V, b, next, sp, scratch);
    if (threadIdx.x == 0) {
      s_go = 1;
      s_next = next;
      const int32_t n = s.n_generated;
      bp<int32_t>(P, t.buf[StepSlots::kRing])[int64_t(b) * h.ring_len + n % h.ring_len] = next;
      s.n_generated = n + 1;
      if (pos + 1 < h.max_context) tokens[pos + 1] = next;
      if (P.host_ring) {  // publish to the host: the token (and its log-probability), then the count
        P.host_ring[int64_t(b) * h.ring_len + n % h.ring_len] = next;
        __threadfence_system();
        *reinterpret_cast<volatile int32_t*>(&P.host_count[b]) = n + 1;
      }
      const program::StopReason stop = program::stop_after_token(
          program::is_eos(const_cast<const program::Control&>(ctl), next), false, n + 1, s.max_new, pos + 2, h.max_context);
      if (stop != program::StopReason::None) {
        s.done = 1;
        s.stop_reason = int32_t(stop);
        s_go = 0;
      }
    }
  }
  csync();
  const int32_t next = s_next;
  const bool go = s_go;
  csync();
  if (!go) return;
  if (next < 0 || next >= V) {
    if (threadIdx.x == 0) dev_fail(P, kErrBadToken, task, next);
    return;
  }
  if (threadIdx.x == 0) {
    s.pos = pos + lanes;
    s.token = next;
  }
  float* x = bp<float>(P, t.buf[StepSlots::kX]) + b * H;
  for (int64_t i = threadIdx.x; i < H; i += kThreads) x[i] = load_f32(P, t.buf[StepSlots::kEmbed], int64_t(next) * H + i);
}

template <>
struct DeviceOp<ops::Step> {
  /// No pre-wait work (the default norm_prefetch finds no norm weights to copy).
  static __device__ __forceinline__ bool own_pre_wait(const DevProgram&) { return false; }
  static __device__ __forceinline__ void pre_wait(const DevProgram&, const TaskDesc&, float*, const RingView&) {}
  static __device__ __forceinline__ void run(const DevProgram& P, const TaskDesc& t, int32_t task, float* smem,
                                                  float* scratch, RingView& R) {
    step(P, t, task, scratch);
  }
};

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
