// The plain-data contract between the CUDA executor's host planner and its
// device code: one DevTask per unit of work in one decode step (the same list
// repeats every step), grouped per SM; the device model's pointers and shapes;
// the per-launch parameters. No host pointers that the device cannot read, no
// CUDA includes: the host fills these, copies them to the GPU, and the kernel
// reads them as-is.
//
// A step's stages form a chain per layer: QKV (norm + matvec) -> ATTN (RoPE,
// KV write, split-KV flash-decoding, merged by the last chunk) -> OPROJ
// (matvec + residual) -> GATEUP (norm + matvec + SiLU gate) -> DOWN (matvec +
// residual), then LMHEAD (norm + matvec + per-tile argmax) -> STEP (argmax
// reduce, token out, next embedding, stop rules). Each stage waits for the
// previous stage's counter to reach (tasks in it) x (steps done), an epoch, so
// no counter is ever reset inside a launch.
#pragma once

#include <cstdint>

namespace keel::exec::cuda {

enum class Op : uint8_t { QKV = 0, ATTN, OPROJ, GATEUP, DOWN, LMHEAD, STEP, kCount };

/// Weight element type in the matvec tiles (as stored in the checkpoint).
enum class WType : uint8_t { BF16 = 0, F16 = 1, F32 = 2 };

struct DevTask {
  Op op;
  WType wtype;
  uint16_t layer;
  int32_t wait_counter;     // counter index to wait on; -1: none
  uint32_t wait_per_step;   // the counter grows by this much per step
  int32_t wait_offset;      // wait for counter >= wait_per_step * (steps done + wait_offset)
  int32_t signal_counter;   // counter to add 1 to when done; -1: none
  int32_t row0, row1;       // matvec: output rows [row0, row1); ATTN: kv head, chunk
  int32_t index;            // LMHEAD: partial slot; ATTN: number of chunks
  int32_t stage;            // stage id = counter it signals (per-op mode runs one stage)
};
static_assert(sizeof(DevTask) == 36, "DevTask is a fixed-size POD (9 words, copied as such)");

struct DevLayer {
  const float* attn_norm;   // [H] fp32
  const void* wqkv;         // [(q+2kv) x ldh]
  const float* bqkv;        // [(q+2kv)] or null
  const float* q_norm;      // [hd] or null
  const float* k_norm;      // [hd] or null
  const void* wo;           // [H x ldq]
  const float* bo;          // [H] or null
  const float* mlp_norm;    // [H]
  const void* wgu;          // [2I x ldh], rows interleaved gate0, up0, gate1, up1, ...
  const float* bgu;         // [2I] interleaved, or null
  const void* wd;           // [H x ldi]
  const float* bd;          // [H] or null
};

struct DevModel {
  int32_t hidden, inter, n_layers, n_heads, n_kv_heads, head_dim, vocab;
  int32_t ldh, ldq, ldi;    // padded row strides (elements, multiples of 16 bytes)
  int32_t max_ctx;
  int32_t sliding_window;   // 0: off
  float rms_eps;
  WType wtype;              // matrices
  WType etype;              // embedding table
  const DevLayer* layers;   // [n_layers] (device)
  const float* final_norm;  // [H]
  const void* embed;        // [V x H] (dense, H elements per row)
  const void* lm_head;      // [V x ldh]
  const float* inv_freq;    // [hd/2], scaling applied
  uint16_t* k_cache;        // [L][nkv][max_ctx][hd] bf16
  uint16_t* v_cache;
};

struct StepIO {
  // Activations (device).
  float* x;                 // [H] residual stream, fp32
  uint16_t* qkv;            // [q+2kv] bf16
  uint16_t* attn;           // [q] bf16
  uint16_t* hbuf;           // [I] bf16
  float* part_o;            // [nh][chunks][hd]
  float* part_ml;           // [nh][chunks][2]
  uint32_t* arrive;         // [nkv] last-chunk detection
  float* lm_val;            // [lm tasks]
  int32_t* lm_idx;
  uint32_t* counters;       // [n_counters]
  int32_t* cur_step;        // per-op mode: the step being run
  // Sequence control.
  const int32_t* prompt;    // [prompt_len] (device)
  int32_t prompt_len;
  int32_t start_pos;        // first position of this launch
  int32_t end_pos;          // exclusive: no step at or past this position
  int32_t max_new;          // stop after this many generated tokens
  const int32_t* eos;       // [n_eos]
  int32_t n_eos;
  int32_t n_lm_tasks;
  // Host-visible (mapped pinned memory).
  volatile int32_t* tokens_out;   // [max_new] generated ids
  volatile int32_t* n_out;        // tokens published so far
  volatile int32_t* host_stop;    // host sets 1 to stop
  int32_t* dev_stop;              // device: 1 once the stop rule fired
  uint64_t* step_ns;              // [steps] globaltimer at each step's end (or null)
  int32_t force_greedy_token;     // >= 0: bench mode feeds this token every step
};

/// What a stalled CTA reports to the watchdog.
struct SmState {
  int32_t task;             // index in its list, -1 idle/done
  int32_t step;
  int32_t counter;          // counter it was waiting on (-1: none)
  uint32_t expected;
  uint32_t seen;
  int32_t reason;           // 0 ok, 1 timed out, 2 aborted by another SM
};

struct Params {
  DevModel m;
  StepIO io;
  const DevTask* tasks;     // all lists, concatenated
  const int32_t* list_begin;  // [grid + 1]: CTA b runs tasks[list_begin[b] .. list_begin[b+1])
  const int32_t* stage_range;  // [grid][n_stage_ids][2]: CTA b's tasks of a stage (per-op mode)
  int32_t n_stage_ids;
  int32_t step_counter;     // index of the STEP stage counter
  uint32_t stage_bytes;     // ring stage size
  int32_t n_stages;         // ring depth
  uint32_t act_bytes;       // activation buffer in smem
  uint32_t res_bytes;       // per-task row results in smem (then the task list)
  int32_t attn_sub;         // attention sub-block (positions per K/V load), multiple of 4
  uint32_t copy_bytes;      // the loader splits a stage into bulk copies of at most this
  int32_t l2_hint;          // 1: weights stream with an L2 evict-first hint
  int32_t l2_ahead;         // chunks past the ring the loader prefetches into L2 (0: off, measured slower)
  uint64_t timeout_ns;      // watchdog: a wait with no progress this long aborts
  uint32_t* abort_flag;     // set by the first CTA that times out
  SmState* sm_state;        // [grid]
  uint64_t* trace;          // optional [grid][trace_cap][2] (start, end | task<<48)
  int32_t trace_cap;
};

/// Floats of shared scratch the attention task needs for a sub-block size:
/// q, k, v, scores, m / l / correction (each padded to 16 bytes), then the K and
/// V sub-blocks in bf16.
constexpr int attn_scratch_floats(int gq, int hd, int sub_block) {
  return gq * hd + 2 * hd + gq * sub_block + 3 * ((gq + 3) & ~3) + sub_block * hd;
}

}  // namespace keel::exec::cuda
