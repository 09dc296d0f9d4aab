// The Program: what the megakernel compiler produces and what every executor
// (cpu, cuda) runs. It is plain data (DESIGN invariant 1): fixed-size POD records
// in flat arrays, indices instead of pointers, a magic and a version. Each array
// can be copied to the device as is. The file format (save/load in
// program/serialize.h) is documented in docs/program-format.md.
//
// Execution model, shared by every executor:
//  * W workers (one per SM on the GPU). Worker w runs the task indices
//    worker_tasks[worker_offsets[w] .. worker_offsets[w+1]) in that order, once
//    per decode step, for steps s = 0, 1, 2, ... Task indices follow one global
//    topological order and every worker list is increasing, so the lowest
//    unfinished task can always run (invariant 4).
//  * Counters: n_counters uint32 counters, zero at launch, never reset. A task,
//    when done with step s, adds 1 to every counter in its signal list (release).
//    Before running at step s it waits (acquire), for each WaitDesc in its wait
//    list, until counter[c] >= expected * (s + offset); a wait whose target is
//    <= 0 is already satisfied. offset 1 = "producers of this step", offset 0 =
//    "producers of the previous step". `expected` is the number of tasks that
//    signal the counter (each signals once per step). The last counters are
//    arrival counters (Attention's `arrival`): neither signalled nor waited on, the C
//    chunks of one (layer, sequence, kv head) add to theirs to find the last.
//  * Step gate: before step s > 0 each worker waits until
//    counter[step_counter] >= step_expected * s (every Step task of step s-1 is
//    done), then stops if every SeqState.done is set or s == control.max_steps.
//    (The host's control.stop_request is read by the Step tasks, which turn it
//    into SeqState.done, so every worker takes the same decision.) Every task of a step is an ancestor of that
//    step's Step tasks (the checker proves it), so a counter can never be pushed
//    to its target by a producer that runs a step ahead.
//  * Launch setup (host, before step 0): zero the counters; fill the page table,
//    Control, each SeqState (pos 0, token = prompt[0], prompt_len, ...), the
//    tokens history (the prompt), and x[b] = fp32(embedding row of prompt[0]).
//    Prefill runs as ordinary steps: while pos+1 < prompt_len the Step task feeds
//    the next prompt token instead of a sampled one and emits nothing.
//
// Numerics (both executors): weights as stored, fp32 accumulation; x (residual
// stream) fp32; normed inputs, raw q/k/v projections, K/V cache, attention
// output and MLP hidden are rounded to bf16 where stored; q is rounded to bf16
// after its epilogue (head norm, RoPE in fp32, inside Attention); attention
// partials, softmax and logits fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/dtype.h"

namespace keel::program {

inline constexpr uint32_t kProgramMagic = 0x4C45454Bu;  // "KEEL" little-endian
// 4: one Attention opcode (KV append and merge folded in); 5: the Target plan
// (ring, shared-memory layout, loader policy, compile options) in the header and
// each task's rows per ring stage.
inline constexpr uint32_t kProgramVersion = 5;
inline constexpr int kMaxOperands = 8;
inline constexpr int kMaxArgs = 4;
inline constexpr int kMaxEos = 8;
inline constexpr int kNameBytes = 64;

/// Task types. Each is one unit in src/ops (its operand view, info row,
/// validation, footprint, CPU twin and device body); src/ops/ops.h lists them
/// and derives the instruction-set table kOpcodeTable from their info rows.
enum class Opcode : uint16_t {
  QkvProj = 1,         // norm-matvec over a row tile of [q; k; v] (+ bias) -> raw bf16 qkv rows
  GateUp = 2,          // norm-matvec of gate and up rows + SiLU(g)*u
  Attention = 3,       // one KV chunk of one (sequence, kv head); the last to finish merges
  MatvecResidual = 4,  // x[rows] += W[rows, k0:k1] . a[k0:k1] (+ bias on the k0 == 0 slice)
  LmHead = 5,          // logits[rows] = W[rows] . norm(x), plus the tile's (max, argmax)
  Step = 6,            // next token, output ring, next embedding into x, position, stop rules
  RmsNorm = 7,         // bf16 normed rows of x (batch Programs: the norm-matvecs' shared input)
  KvAppend = 8,        // prefill lanes' k (head norm, RoPE) and v into the KV cache
  PrefillAttention = 9,  // causal attention of a block of prefill lanes over the cache, tensor cores
};
inline constexpr int kNumOpcodes = 9;

/// TaskDesc::flags bits.
enum TaskFlags : uint16_t {
  /// MatvecResidual: other tasks of the same operator add to the same rows of x
  /// concurrently (split-K), so the add must be atomic (fp32 atomicAdd).
  kFlagAtomicAccumulate = 1u << 0,
  /// Attention, PrefillAttention: the layer uses sliding-window attention; position p attends to
  /// [max(0, p - ProgramHeader::sliding_window + 1), p] (attn_window_clip).
  kFlagSlidingWindow = 1u << 1,
};

/// One row of the instruction-set table (ops::kOpcodeTable, src/ops/ops.h):
/// rows [row0,row1) are output rows of the weight matrix, [k0,k1) the reduction
/// slice, [b0,b1) the sequences of the batch a task serves.
struct OpcodeInfo {
  Opcode opcode;
  const char* name;
  const char* operands[kMaxOperands];  // meaning of buf[i] ("" = unused)
  const char* args[kMaxArgs];          // meaning of arg[i] ("" = unused)
  const char* does;
};


/// One task: a fixed-size record read by both the CPU and the CUDA executor.
struct TaskDesc {
  uint16_t opcode = 0;         // Opcode
  uint16_t flags = 0;          // TaskFlags
  uint16_t op = 0;             // index into Program::ops (operator instance)
  int16_t layer = -1;          // decoder layer, -1 outside layers
  int32_t buf[kMaxOperands];   // operand buffer ids (index into Program::buffers), -1 unused; named by each unit's view (src/ops)
  int32_t row0 = 0, row1 = 0;  // output rows [row0, row1)
  int32_t k0 = 0, k1 = 0;      // reduction slice [k0, k1)
  int32_t b0 = 0, b1 = 0;      // sequences [b0, b1)
  int32_t arg[kMaxArgs];       // opcode-specific, named by each unit's view (src/ops)
  uint32_t wait_begin = 0;     // waits[wait_begin .. wait_begin + wait_count)
  uint32_t wait_count = 0;
  uint32_t signal_begin = 0;   // signals[signal_begin .. signal_begin + signal_count)
  uint32_t signal_count = 0;
  uint64_t weight_bytes = 0;   // bytes of weights this task streams (cost model)
  float cost_us = 0;           // predicted time at the compile bandwidth (report)
  uint32_t reserved[5] = {0, 0, 0, 0, 0};  // [0]: rows per ring stage (stage_rows()), [1]: columns per stage (stage_cols()); others 0
  TaskDesc() {
    for (auto& b : buf) b = -1;
    for (auto& a : arg) a = 0;
  }
};
static_assert(sizeof(TaskDesc) == 128, "TaskDesc is a fixed 128-byte record");

/// Rows of the task's weight tile per ring stage on the CUDA executor (0: the
/// task does not stream weights through the ring), decided by the compiler for
/// its Target (program/smem_plan.h) and followed by the loader and the compute
/// warps. Kept in reserved word 0.
KEEL_HD uint32_t stage_rows(const TaskDesc& t) { return t.reserved[0]; }
inline void set_stage_rows(TaskDesc& t, uint32_t rows) { t.reserved[0] = rows; }

/// Columns of the weight tile per ring stage, for the multi-token matmul tasks
/// (tasks serving several sequences with tensor cores): a stage then holds
/// stage_rows() rows x stage_cols() columns of each matrix and the tile streams
/// row block after row block, each in (k1 - k0) / stage_cols() column chunks.
/// 0: a stage holds whole row segments [k0, k1) (the matvec tasks). Kept in
/// reserved word 1.
KEEL_HD uint32_t stage_cols(const TaskDesc& t) { return t.reserved[1]; }
inline void set_stage_cols(TaskDesc& t, uint32_t cols) { t.reserved[1] = cols; }

/// A consumer waits until counter >= expected * (step + offset).
struct WaitDesc {
  uint32_t counter = 0;
  uint32_t expected = 0;
  int32_t offset = 1;   // 1: this step's producers, 0: the previous step's
  uint32_t reserved = 0;
};
static_assert(sizeof(WaitDesc) == 16);

enum class BufferKind : uint8_t {
  Weight = 0,      // a checkpoint tensor, found by name; offset unused
  Activation = 1,  // in the workspace arena; may share bytes with other activations (liveness)
  State = 2,       // in the workspace arena, persistent across steps, set up by the host
  Kv = 3,          // in the KV arena: pages [n_pages][nkv][page_size][hd] bf16
  Constant = 4,    // in Program::constants (e.g. RoPE inverse frequencies, f32)
};
std::string_view buffer_kind_name(BufferKind k);

struct BufferDesc {
  char name[kNameBytes] = {};  // tensor name for weights, e.g. "x", "qkv.3", "k_cache.3"
  uint8_t kind = 0;            // BufferKind
  uint8_t dtype = 0;           // DType; for weights the declared dtype (the executor uses the stored one)
  uint16_t reserved0 = 0;
  int32_t layer = -1;
  uint64_t offset = 0;         // byte offset in its arena (workspace, KV, constants)
  uint64_t count = 0;          // elements (for State buffers of structs: int32 words)
  int64_t rows = 0, cols = 0;  // 2-D shape where meaningful (weights, [B, n] activations)
  std::string_view name_view() const;
};
static_assert(sizeof(BufferDesc) == 104);

/// Per-sequence state (State buffer "state", B records of 16 int32 words).
struct SeqState {
  int32_t pos = 0;           // position of the token being processed this step
  int32_t token = 0;         // token being processed this step
  int32_t prompt_len = 0;
  int32_t n_generated = 0;   // tokens emitted into the ring so far
  int32_t max_new = 0;       // stop after this many generated tokens
  int32_t done = 0;          // 1: finished (stop_reason says why)
  int32_t stop_reason = 0;   // StopReason
  float temperature = 0;     // sampling (engine::SamplingParams semantics); <= 0: greedy
  int32_t top_k = 0;
  float top_p = 1;
  float min_p = 0;
  float repetition_penalty = 1;
  uint32_t seed_lo = 0, seed_hi = 0;
  /// Sampling draws the sequence made before this launch (a generation
  /// resumed in a new launch): generated token n draws rng_uniform(seed, 0,
  /// draw0 + n), so a resumed generation draws what an uninterrupted one would.
  int32_t draw0 = 0;
  /// 1: the Step reports each generated token's log-probability under the
  /// model's distribution (log-softmax of the raw logits, before temperature
  /// and the other sampling filters: token_logprob). A former reserved word.
  int32_t want_logprob = 0;
};
static_assert(sizeof(SeqState) == 64);
inline constexpr int kSeqStateWords = 16;

enum class StopReason : int32_t { None = 0, Eos = 1, MaxTokens = 2, Context = 3, Stopped = 4 };

/// Positions [*p0, *p1) that Attention chunk `chunk` of C attends to when the
/// sequence is at position pos: chunks 0..C-2 split [0, pos) (K/V written in
/// earlier steps, so they need not wait for this step's k and v rows), the last
/// chunk is pos itself (which that chunk appends first); with C == 1 the one
/// chunk is [0, pos]. A chunk may be empty.
KEEL_HD void attn_chunk_range(int64_t pos, int64_t chunk, int64_t C, int64_t* p0, int64_t* p1) {
  if (C <= 1) {
    *p0 = 0;
    *p1 = pos + 1;
  } else if (chunk == C - 1) {
    *p0 = pos;
    *p1 = pos + 1;
  } else {
    *p0 = pos * chunk / (C - 1);
    *p1 = pos * (chunk + 1) / (C - 1);
  }
}

/// Positions [*p0, *p1) of Attention chunk `chunk` of C in a decode Program
/// with a minimum chunk length (ProgramHeader::attn_min_chunk = L > 0): the
/// positions [0, pos] split evenly over as many chunks as give each about L
/// (at least 1, at most C), which are the last ones; the chunks before them
/// are empty. So the work follows the position: at a short one the appending
/// chunk takes everything (no partials to merge worth the name), at a long
/// one all C share it. The last chunk always covers pos (and appends it); the
/// others end before pos, reading only K/V of earlier steps.
KEEL_HD void attn_even_range(int64_t pos, int64_t chunk, int64_t C, int64_t L, int64_t* p0, int64_t* p1) {
  const int64_t n = pos + 1;
  int64_t active = (n + L - 1) / L;
  active = active < 1 ? 1 : active > C ? C : active;
  const int64_t j = chunk - (C - active);
  if (j < 0) {
    *p0 = *p1 = 0;
  } else {
    *p0 = n * j / active;
    *p1 = n * (j + 1) / active;
  }
}

/// At most how many positions before its sequence's position one Attention
/// chunk reads at any position up to pos (attn_chunk_range, or
/// attn_even_range with min_len > 0): what the K/V staging decision
/// (ops::Attention::streams) sizes for. Exact for attn_chunk_range; for
/// attn_even_range a bound at most one above (a chunk holds at most min_len
/// positions until all C have work, then (n + C - 1) / C of the n = pos + 1).
KEEL_HD int64_t attn_longest_history(int64_t pos, int64_t C, int64_t min_len) {
  if (C <= 1) return pos;
  if (min_len <= 0) return (pos + C - 2) / (C - 1);
  const int64_t n = pos + 1, most = (n + C - 1) / C, small = n < min_len ? n : min_len;
  return most > small ? most : small;
}

/// Clips an Attention chunk's positions [*p0, *p1) (attn_chunk_range or attn_even_range) to a
/// sliding window at pos: [max(0, pos - window + 1), pos]. A chunk wholly
/// before the window becomes empty (*p0 == *p1); window <= 0: no clipping.
/// The chunk covering pos keeps it (pos is always inside the window).
KEEL_HD void attn_window_clip(int64_t pos, int64_t window, int64_t* p0, int64_t* p1) {
  if (window <= 0) return;
  const int64_t lo = pos - window + 1;
  if (*p0 < lo) *p0 = lo < *p1 ? lo : *p1;
}

/// The sampling random number both executors draw: a uniform float in [0, 1)
/// for a sequence when it generates its `n`-th token (splitmix64 of the seed
/// and the pair), so CPU and GPU sample the same token from the same
/// probabilities. The Step tasks pass seq = 0 whatever the sequence's lane in
/// the batch: a request's draws depend on its own seed and token count only, so
/// it samples the same tokens alone or in any slot of a batch.
KEEL_HD float rng_uniform(uint64_t seed, uint32_t seq, uint32_t n) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * ((uint64_t(seq) << 32 | n) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(z >> 40) * (1.0f / 16777216.0f);
}

/// Launch-wide control block (State buffer "control", 16 int32 words).
struct Control {
  int32_t max_steps = 0;     // the step gate stops before this step
  int32_t stop_request = 0;  // set by the host; the next Step tasks mark their sequences done
  int32_t n_eos = 0;
  int32_t eos[kMaxEos] = {};
  int32_t reserved[5] = {};
};
static_assert(sizeof(Control) == 64);
inline constexpr int kControlWords = 16;

/// An operator instance (a node of the graph), for reports and dependency grouping.
struct OpDesc {
  char name[32] = {};  // e.g. "qkv", "attn", "merge", "o_proj", "gate_up", "down", "lm_head", "step"
  uint16_t opcode = 0;
  int16_t layer = -1;
  uint32_t task_begin = 0, task_count = 0;  // tasks of one operator are contiguous
  uint32_t reserved = 0;
};
static_assert(sizeof(OpDesc) == 48);

/// The device plan (Program v5): the Target the compiler planned for, resolved
/// into the CUDA kernel's shared-memory layout and loader policy. Dynamic
/// shared memory = [ring: n_stages x stage_bytes][work area: work_bytes]; the
/// kernel's static shared memory must fit static_smem (checked at launch), and
/// static_smem + dynamic_smem <= smem_per_block. docs/cuda-executor.md.
/// The tensor-core instructions of the CUDA kernel's matmul tiles (TargetDesc::mm_engine).
enum MmEngine : int32_t { kMmEngineMma = 0, kMmEngineWgmma = 1 };

struct TargetDesc {
  char name[32] = {};           // preset or device name ("h100", "h200", "generic", ...)
  int32_t sms = 0;              // the target's SM count
  uint32_t smem_per_block = 0;  // opt-in shared memory per block the layout was planned for
  uint32_t static_smem = 0;     // bytes reserved for the kernel's static shared memory
  uint32_t dynamic_smem = 0;    // ring + work area: the launch's dynamic shared memory
  uint32_t stage_bytes = 0;     // ring stage (0: no ring, every task reads global memory)
  int32_t n_stages = 0;         // ring stages
  uint32_t work_offset = 0;     // the work area's offset (= n_stages * stage_bytes)
  uint32_t work_bytes = 0;      // the work area (at least work_need)
  uint32_t work_need = 0;       // bytes the tasks need in it (kernel_work_bytes)
  int32_t max_stages = 0;       // the target's policy: most stages (0: as many as fit, at most 8)
  int32_t max_inflight = 0;     // the loader keeps at most this many stages in flight (0: the ring)
  int32_t loader_hold = 0;      // 1: the loader holds around its CTA's releases and attention inputs
  int32_t l2_evict_first = 0;   // weight copies carry an L2 evict-first hint
  int32_t o_split_k = 0;        // the target's split-K choices (0: the compiler's)
  int32_t down_split_k = 0;
  int32_t mm_engine = 0;        // matmul tiles' tensor-core instructions (MmEngine)
  int32_t row_align = 0;        // the target's row alignment of matvec / matmul tasks for this batch (0: 8)
  int32_t mm_cols = 0;          // most columns of a matmul tile's stage (0: program::mm_max_cols(batch))
  /// Most sequences of one Attention task (a power of two up to 8; 0 or 1:
  /// one): the CUDA kernel gives each of a task's sequences 8 / attn_seqs
  /// warps (attention_group). The largest group the Program holds.
  int32_t attn_seqs = 0;
  /// Most tokens (lanes) of one matmul task (0: program::kMmMaxTokens, 64; or
  /// 128 in Programs of more than 64 lanes): the wide tiles of the CUDA
  /// kernel's wide variant, each weight stage multiplied by up to
  /// program::kMmWideMaxTokens tokens (program::mm_max_tokens). A former
  /// reserved word.
  int32_t mm_tokens = 0;
};
static_assert(sizeof(TargetDesc) == 112);

/// The compile options as given (compiler::CompileOptions; 0 = "the compiler's
/// choice" kept as 0), so a recompile for another device uses the same ones.
struct OptionsDesc {
  int32_t workers = 0, batch = 0, max_context = 0, page_size = 0, ring_len = 0, row_align = 0;
  int32_t o_split_k = 0, down_split_k = 0, attn_chunks = 0, predict_context = 0, prune_transitive = 0;
  int32_t weight_dtype = 0;  // DType of the weight matrices the Program was planned for
  double bandwidth_GBps = 0, task_overhead_us = 0, attn_task_us = 0, kv_append_us = 0;
};
static_assert(sizeof(OptionsDesc) == 80);

/// Fixed header: model dimensions, launch shape, well-known buffer ids, sizes,
/// the device plan and the compile options.
struct ProgramHeader {
  uint32_t magic = kProgramMagic;
  uint32_t version = kProgramVersion;
  uint32_t header_bytes = sizeof(ProgramHeader);
  uint32_t task_bytes = sizeof(TaskDesc);
  // model
  int32_t arch = 0;  // model::Arch
  int32_t n_layers = 0, hidden = 0, intermediate = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0,
          vocab = 0;
  float rms_eps = 1e-6f;
  float attn_scale = 1;  // rope attention factor^2 / sqrt(head_dim) (the factor: yarn's, else 1)
  int32_t qk_norm = 0, qkv_bias = 0, o_bias = 0, mlp_bias = 0, tie_embeddings = 0;
  // launch shape
  int32_t n_workers = 0, batch = 0, max_context = 0, page_size = 0, pages_per_seq = 0,
          n_pages = 0, ring_len = 0;
  int32_t n_chunks = 0;    // attention KV chunks per (sequence, kv head)
  int32_t n_lm_tiles = 0;  // LM-head tiles (argmax partials per sequence)
  // well-known buffers (ids into buffers)
  int32_t buf_x = -1, buf_state = -1, buf_control = -1, buf_tokens = -1, buf_ring = -1,
          buf_page_table = -1, buf_logits = -1, buf_argmax = -1, buf_embed = -1, buf_rope = -1;
  // step gate
  uint32_t step_counter = 0, step_expected = 0;
  // array sizes
  uint32_t n_tasks = 0, n_waits = 0, n_signals = 0, n_counters = 0, n_buffers = 0, n_ops = 0,
           n_worker_entries = 0;
  int32_t sliding_window = 0;  // the window of Attention tasks flagged kFlagSlidingWindow (0: none)
  uint64_t workspace_bytes = 0, kv_bytes = 0, constants_bytes = 0;
  /// Lanes per sequence (chunked prefill). 0 or 1: a decode Program, lane b is
  /// sequence b at its own position. T > 1: a prefill Program (compile option
  /// prefill_chunk): the batch is batch / T sequences of T lanes each; lane i
  /// of a sequence processes position s0 + i of its prompt, where s0 (a
  /// multiple of T) is the step's first position (step_first_pos); the lanes
  /// share the sequence's KV pages, each Step moves a lane T positions on, and
  /// a lane is done when that passes the prompt's last position but one (the
  /// decode Program runs the last prompt position and samples). Prefill
  /// Programs have no LM head and at least 2 attention chunks. It sits in the
  /// header's former reserved words, so decode Programs are unchanged.
  int32_t seq_lanes = 0;
  /// A mixed Program (seq_lanes T > 1 and decode_lanes D > 0; compile option
  /// decode_lanes): lanes [0, D) decode, one sequence each, as in a decode
  /// Program (LM head, sampling), and lanes [D, batch) are prefill groups of T
  /// lanes, one sequence each, as in a prefill Program: one step carries the
  /// decode tokens of up to D sequences and T prompt positions of another, so
  /// a long prompt is prefilled beside the others' decoding instead of
  /// stalling it. 0 otherwise (a former reserved word: older Programs read as
  /// before).
  int32_t decode_lanes = 0;
  /// Decode Programs of several sequences: the minimum positions per
  /// Attention chunk (attn_even_range): chunks split [0, pos] evenly, as many
  /// as give each this many, the rest empty. 0: attn_chunk_range (chunks
  /// 0..C-2 split the history, the last appends). Former reserved words, as
  /// the next: older Programs read as 0.
  int32_t attn_min_chunk = 0;
  /// The compile option as given plus one (compiler::CompileOptions::
  /// attn_min_chunk: 0 here = -1 there, the compiler's choice), so a
  /// recompile makes the same choice and a Program compiled with the default
  /// keeps the former reserved word's zero.
  int32_t opt_attn_min_chunk = 0;
  uint64_t reserved[2] = {};
  TargetDesc target;
  OptionsDesc options;
};
static_assert(sizeof(ProgramHeader) == 440, "ProgramHeader layout is part of the file format");

/// Columns of the raw qkv activation (QkvProj's output): the concatenation
/// [q; k; v] of one sequence, (n_heads + 2 * n_kv_heads) * head_dim. Part p
/// starts at column 0, n_heads*hd, (n_heads+n_kv_heads)*hd for q, k, v.
inline int64_t qkv_width(const ProgramHeader& h) {
  return (int64_t(h.n_heads) + 2 * int64_t(h.n_kv_heads)) * h.head_dim;
}
inline int64_t qkv_part_begin(const ProgramHeader& h, int part) {
  return (part == 0 ? 0 : part == 1 ? int64_t(h.n_heads) : int64_t(h.n_heads) + h.n_kv_heads) * h.head_dim;
}
/// Lanes per prefill sequence of a Program (ProgramHeader::seq_lanes; 1 for
/// decode Programs).
KEEL_HD int64_t lanes_per_seq(const ProgramHeader& h) { return h.seq_lanes > 1 ? h.seq_lanes : 1; }

// Lanes and sequences. A decode Program's lane b is sequence b. A prefill
// Program's lanes are groups of seq_lanes lanes, one sequence each. A mixed
// Program (ProgramHeader::decode_lanes) has decode lanes [0, decode_lanes),
// then prefill groups. These are the one definition every executor, the
// compiler and the checker use.

/// Lanes that decode (LM head, sampling): the batch of a decode Program, 0 in
/// a prefill Program, decode_lanes in a mixed one.
KEEL_HD int64_t n_decode_lanes(const ProgramHeader& h) { return h.seq_lanes > 1 ? h.decode_lanes : h.batch; }
/// Whether lane b is a prefill lane (one of seq_lanes lanes of a sequence).
KEEL_HD bool is_prefill_lane(const ProgramHeader& h, int64_t b) { return h.seq_lanes > 1 && b >= h.decode_lanes; }
/// Lanes of lane b's sequence: seq_lanes for a prefill lane, else 1. Each
/// step moves the lane this many positions on.
KEEL_HD int64_t lane_width(const ProgramHeader& h, int64_t b) { return is_prefill_lane(h, b) ? h.seq_lanes : 1; }
/// Lane b's index among its sequence's lanes (0 for a decode lane).
KEEL_HD int64_t lane_index(const ProgramHeader& h, int64_t b) {
  return is_prefill_lane(h, b) ? (b - h.decode_lanes) % h.seq_lanes : 0;
}
/// The sequence lane b serves: decode lanes are sequences [0, n_decode_lanes),
/// each prefill group the next one.
KEEL_HD int64_t lane_sequence(const ProgramHeader& h, int64_t b) {
  return is_prefill_lane(h, b) ? h.decode_lanes + (b - h.decode_lanes) / h.seq_lanes : b;
}
/// The sequences a launch of the Program serves at most (the KV cache's
/// sequences when it has a slot for each).
KEEL_HD int64_t n_lane_sequences(const ProgramHeader& h) {
  return h.seq_lanes > 1 ? h.decode_lanes + (h.batch - h.decode_lanes) / h.seq_lanes : h.batch;
}

/// The first position of the step lane b (at pos) belongs to: positions
/// [step_first_pos, pos) are written by other lanes of its sequence in the same
/// step (prefill lanes); pos itself for a decode lane.
KEEL_HD int64_t step_first_pos(const ProgramHeader& h, int64_t b, int64_t pos) { return pos - lane_index(h, b); }

static_assert(std::is_trivially_copyable_v<ProgramHeader> && std::is_trivially_copyable_v<TaskDesc> &&
              std::is_trivially_copyable_v<WaitDesc> && std::is_trivially_copyable_v<BufferDesc> &&
              std::is_trivially_copyable_v<OpDesc>);

/// A compiled Program. All arrays are POD; indices refer into them.
struct Program {
  ProgramHeader h;
  std::vector<TaskDesc> tasks;             // in global topological order
  std::vector<WaitDesc> waits;             // flat; TaskDesc::wait_begin/count
  std::vector<uint32_t> signals;           // flat counter ids; TaskDesc::signal_begin/count
  std::vector<BufferDesc> buffers;
  std::vector<OpDesc> ops;
  std::vector<uint32_t> worker_offsets;    // n_workers + 1
  std::vector<uint32_t> worker_tasks;      // task indices, worker lists concatenated
  std::vector<uint8_t> constants;          // Constant buffers' bytes

  const BufferDesc& buffer(int32_t id) const { return buffers.at(size_t(id)); }
  /// Finds a buffer by name; -1 when absent.
  int32_t find_buffer(std::string_view name) const;
  /// The tasks of worker w, in run order.
  const uint32_t* worker_begin(int w) const { return worker_tasks.data() + worker_offsets[w]; }
  const uint32_t* worker_end(int w) const { return worker_tasks.data() + worker_offsets[w + 1]; }
  /// Checks internal consistency (sizes, ids in range, per-worker order increasing,
  /// every task on exactly one worker); throws keel::Error naming the culprit.
  void validate() const;
};

/// A short description of a task, e.g. "#123 gate_up L3 rows [0,96) b[0,1)".
std::string describe_task(const Program& p, uint32_t task);

/// The target name (TargetDesc::name) as a string.
std::string target_name(const ProgramHeader& h);

// --- What each task reads and writes ----------------------------------------
// The one definition of every opcode's memory footprint (each unit's
// accesses(), src/ops), derived from the TaskDesc alone. The compiler's dependency pass and the checker both use it.
// Addresses live in "spaces": space 0 is the workspace arena (bytes, so aliased
// activations overlap), space 1 + id is KV buffer `id` in logical units of
// (sequence, kv head) — a task touching any position of that head touches the
// unit, since positions are only known at run time. Weights and constants are
// read-only and not listed.

enum class AccessMode : uint8_t { Read = 0, Write = 1, Accumulate = 2 };

/// Bytes (units) [lo, hi), and in the workspace nrows - 1 more ranges of the
/// same length, `pitch` bytes apart: the same columns of a block of rows
/// (AccessSink::rows), kept as one rectangle (program/access_map.h).
struct Access {
  uint32_t space = 0;
  uint64_t lo = 0, hi = 0;  // [lo, hi) of the first row
  AccessMode mode = AccessMode::Read;
  int32_t buffer = -1;      // for messages
  uint32_t nrows = 1;       // rows (workspace only; 1 in a KV space)
  uint64_t pitch = 0;       // bytes from one row's range to the next (nrows > 1)
};

/// Appends the accesses of `t` to `out` (reads before writes).
void task_accesses(const Program& p, const TaskDesc& t, std::vector<Access>& out);

/// Formats an access range as "buffer[elements lo..hi)" (a block of rows:
/// "buffer[rows b0..b1, elements c0..c1)") for messages.
std::string describe_access(const Program& p, const Access& a);

}  // namespace keel::program
