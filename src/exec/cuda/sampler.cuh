// The Step task's sampler on one CTA: the device twin of program::sample_token
// (src/program/sampling.cpp), drawing the same token from the same logits and
// uniform. The algorithm is parallel (threshold searches instead of sorts), the
// per-element rules (penalty, ranking, candidates, weights, min-p cut) are the
// host/device functions of program/sampling.h. Included by src/ops/step.cuh (it
// uses program_tasks.cuh's block reductions).
#pragma once

#include "exec/cuda/program_tasks.cuh"
#include "program/sampling.h"

namespace keel::exec::cuda::prog {
inline namespace KEEL_DEVICE_NS {

/// Order-preserving key of a float (larger float -> larger key; -0 and +0 alike,
/// as the CPU's float compares see them).
__device__ __forceinline__ uint32_t fkey(float f) {
  const uint32_t u = __float_as_uint(f + 0.0f);  // -0 + 0 = +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ int32_t block_argmax_logits(const float* logits, int64_t V, float* scratch) {
  float bv = -INFINITY;
  int32_t bi = INT32_MAX;
  for (int64_t i = threadIdx.x; i < V; i += kThreads)
    if (better(logits[i], int32_t(i), bv, bi)) bv = logits[i], bi = int32_t(i);
  block_argmax(bv, bi, scratch, reinterpret_cast<int32_t*>(scratch + 32));
  return bi == INT32_MAX ? 0 : bi;  // the CPU starts at index 0
}

/// program::token_logprob of `token` (thread 0's) on the device, stored by
/// thread 0 at sequence b's next entry of the host's log-probability ring
/// (the Step publishes the count after it). Every thread of the block calls
/// it; the sums in another order than the host's. Out of line, so the Step's
/// common path carries none of it.
__device__ __noinline__ void publish_token_logprob(const DevProgram& P, const float* logits, int64_t V, int b,
                                                   int32_t token, const SeqState* s, float* scratch) {
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) m = fmaxf(m, logits[i]);
  m = block_max(m, scratch);
  float sum = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) sum += expf(logits[i] - m);
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0 && P.host_logprob) {
    const int32_t n = reinterpret_cast<const volatile SeqState*>(s)->n_generated;
    P.host_logprob[int64_t(b) * P.h.ring_len + n % P.h.ring_len] = (logits[token] - m) - logf(sum);
  }
}

/// program::sample_token on one CTA (see its definition for the order of the
/// transforms). Modifies logits in place like the CPU. Returns the token.
/// Top-k and top-p thresholds are found by a bitwise search over float keys
/// (32 counting passes), the draw by a block prefix sum over id ranges.
__device__ __noinline__ int32_t sample_token(float* logits, int64_t V, const int32_t* history, int64_t n_history,
                                const program::SamplingParams& s, float u, float* scratch) {
  __shared__ double dscratch[kWarps];
  __shared__ uint32_t uscratch[kWarps];
  __shared__ double range_sum[kThreads];
  __shared__ int32_t s_pick;
  if (s.repetition_penalty != 1.0f && n_history > 0) {
    for (int64_t i = threadIdx.x; i < n_history; i += kThreads) {
      const int32_t id = history[i];
      bool first = true;  // each distinct id once
      for (int64_t j = 0; j < i && first; ++j) first = history[j] != id;
      if (first && id >= 0 && id < V) {
        logits[id] = program::apply_repetition_penalty(logits[id], s.repetition_penalty);
      }
    }
    csync();
  }
  if (s.greedy()) return block_argmax_logits(logits, V, scratch);
  float mx = -INFINITY, bv = -INFINITY;  // (bv, bi): argmax of the logits before the temperature
  int32_t bi = INT32_MAX;
  uint32_t n_cand = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) {
    const float raw = logits[i];
    if (program::ranks_above(raw, int32_t(i), bv, bi)) bv = raw, bi = int32_t(i);
    logits[i] = raw / s.temperature;
    if (program::is_candidate(logits[i])) mx = fmaxf(mx, logits[i]), ++n_cand;
  }
  mx = block_max(mx, scratch);
  n_cand = block_sum_u(n_cand, uscratch);
  if (n_cand == 0 || mx == INFINITY) {  // the limit is greedy on the logits as given (block-uniform branch)
    block_argmax(bv, bi, scratch, reinterpret_cast<int32_t*>(scratch + 32));
    return bi == INT32_MAX ? 0 : bi;
  }
  auto cand = [&](int64_t i) { return program::is_candidate(logits[i]); };
  // top-k: keep logits >= the k-th largest value (its key: the largest t with count(key >= t) >= k).
  uint32_t kth_key = 0;
  if (s.top_k > 0 && uint32_t(s.top_k) < n_cand) {
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t t = kth_key | (1u << bit);
      uint32_t c = 0;
      for (int64_t i = threadIdx.x; i < V; i += kThreads) c += cand(i) && fkey(logits[i]) >= t;
      if (block_sum_u(c, uscratch) >= uint32_t(s.top_k)) kth_key = t;
    }
  }
  auto alive_k = [&](int64_t i) { return cand(i) && fkey(logits[i]) >= kth_key; };
  // top-p over the top-k survivors, sorted by (value desc, id asc): the smallest prefix whose
  // probability reaches p. Its last value v* is the largest key t with mass(key >= t) >= p*total;
  // ties at v* are taken in id order.
  uint32_t p_key = 0;
  int32_t p_last = INT32_MAX;
  uint32_t n_k = 0;
  for (int64_t i = threadIdx.x; i < V; i += kThreads) n_k += alive_k(i);
  n_k = block_sum_u(n_k, uscratch);
  if (s.top_p < 1.0f && n_k > 1) {
    double tot = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
      if (alive_k(i)) tot += program::top_p_mass(logits[i], mx);
    const double total = block_sum_d(tot, dscratch);
    const double goal = double(s.top_p) * total;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t t = p_key | (1u << bit);
      double mass = 0;
      for (int64_t i = threadIdx.x; i < V; i += kThreads)
        if (alive_k(i) && fkey(logits[i]) >= t) mass += program::top_p_mass(logits[i], mx);
      if (block_sum_d(mass, dscratch) >= goal) p_key = t;
    }
    // mass strictly above v*, then the ties at v* in id order (one thread: ties are rare)
    double above = 0;
    for (int64_t i = threadIdx.x; i < V; i += kThreads)
      if (alive_k(i) && fkey(logits[i]) > p_key) above += program::top_p_mass(logits[i], mx);
    above = block_sum_d(above, dscratch);
    if (threadIdx.x == 0) {
      double cum = above;
      int32_t last = INT32_MAX;
      for (int64_t i = 0; i < V; ++i)
        if (alive_k(i) && fkey(logits[i]) == p_key) {
          cum += program::top_p_mass(logits[i], mx);
          last = int32_t(i);
          if (cum >= goal) break;
        }
      s_pick = last;
    }
    csync();
    p_last = s_pick;
    csync();
  }
  const double cut = program::min_p_cut(s.min_p);
  auto alive = [&](int64_t i) {
    if (!alive_k(i)) return false;
    if (p_last != INT32_MAX) {
      const uint32_t k = fkey(logits[i]);
      if (k < p_key || (k == p_key && i > p_last)) return false;
    }
    return !(s.min_p > 0.0f && program::min_p_drops(logits[i], mx, cut));
  };
  // Draw: survivors in ascending id order with weights float(exp(l - max)).
  const int64_t per = (V + kThreads - 1) / kThreads;
  const int64_t lo = threadIdx.x * per, hi = lo + per < V ? lo + per : V;
  double mine = 0;
  int32_t last_alive = -1;
  for (int64_t i = lo; i < hi; ++i)
    if (alive(i)) mine += program::draw_weight(logits[i], mx), last_alive = int32_t(i);
  range_sum[threadIdx.x] = mine;
  if (threadIdx.x == 0) s_pick = -1;
  csync();
  if (last_alive >= 0) atomicMax(&s_pick, last_alive);  // idx.back() if the walk never stops
  csync();
  const int32_t fallback = s_pick;
  csync();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int k = 0; k < kThreads; ++k) total += range_sum[k];
    const double target = double(u) * total;
    double cum = 0;
    int32_t pick = fallback;
    for (int k = 0; k < kThreads && pick == fallback; ++k) {
      if (cum + range_sum[k] <= target) {
        cum += range_sum[k];
        continue;
      }
      const int64_t a = k * per, z = a + per < V ? a + per : V;
      for (int64_t i = a; i < z; ++i)
        if (alive(i)) {
          cum += program::draw_weight(logits[i], mx);
          if (target < cum) {
            pick = int32_t(i);
            break;
          }
        }
      break;
    }
    s_pick = pick;
  }
  csync();
  const int32_t r = s_pick;
  csync();
  return r;
}

}  // namespace KEEL_DEVICE_NS
}  // namespace keel::exec::cuda::prog
