// The device a Program is planned for (DESIGN invariant 8): a compile input
// that names everything the CUDA executor used to decide for itself: the SM
// count (= workers), the shared memory a block may use, the weight ring's shape,
// the loader's policy, the L2 hint and the split-K choices measured best on the
// GPU. The compiler resolves it into the Program's header (program::TargetDesc:
// ring stages, shared-memory layout) and each task's rows per ring stage; the
// executor validates and follows. `h100` and `h200` are presets; `auto` (query
// the device) is exec/cuda's device_target(), since the compiler does not link
// CUDA. docs/compiler.md "Target".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "program/program.h"

namespace keel::compiler {

struct Target {
  /// Preset or device name; recorded in the Program (at most 31 characters).
  std::string name = "generic";
  int sms = 132;                          // SMs: the Program's workers unless CompileOptions::workers says otherwise
  uint32_t smem_per_block = 227 * 1024;   // opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin)
  /// Shared memory kept for the kernel's static variables (SmemStatic, the
  /// sampler's scratch; about 5.3 KiB today); the executor checks at launch
  /// that the kernel's real static size fits it.
  uint32_t static_smem_reserve = 8 * 1024;
  // ---- weight ring and loader ----
  uint32_t stage_bytes = 64 * 1024;  // ring stage (multiple of 16); 0: no ring (weights from global memory)
  int max_stages = 0;                // most stages (0: as many as fit, at most 8); fewer than 2 fit: halve the stage
  int max_inflight = 1;              // stages issued and not landed at most (0: the whole ring)
  /// 1: after a streaming task the loader holds until the task's signals are
  /// published, and before an attention task until it read its inputs, but
  /// lets the next task's copies go on while the compute warps have not
  /// started the task held for (docs/cuda-executor.md "Loader holds"); 0: never.
  int loader_hold = 1;
  /// The same two for Programs of several sequences (the batch kernel's matmul
  /// tiles): the whole ring in flight, no holds (measured on the H200 at batch
  /// 8: 13.58 -> 12.82 ms/step on Qwen3-8B, 3.24 -> 3.12 on Llama-3.2-1B).
  int batch_max_inflight = 0;
  int batch_loader_hold = 0;
  /// Most ring stages for them (0: as many as fit): three (H200, Qwen3-8B
  /// batch 8 after the matmul loop lost its per-stage overhead, 8a8aff9: 2
  /// stages 8.23 ms/step, 3 stages 7.84; before it 2 stages had been faster,
  /// 10.19 against 10.60, when the loop and not the ring was the limit).
  int batch_max_stages = 3;
  /// The same where a (sequence, kv head) has one or two attention chunks
  /// (batches of 6-16 on 132 workers and 8 kv heads, where a chunk holds half
  /// the context or all of it): two stages, so the work area gains 64 KiB and
  /// holds attn_stream_smem's staging buffer (67.6 KB at head_dim 128, which
  /// the kernel uses wherever it fits): the chunk's K/V stream through shared
  /// memory instead of registers (trace, Qwen3-8B batch 8 at 2048: an
  /// attention task 88 -> 48 us).
  /// H100, 2026-12-06, ms/step, 3 stages -> 2: Qwen3-8B batch 8 at context
  /// 512 8.23 -> 7.96, 2048 10.20 -> 8.87, batch 16 at 2048 11.09 -> 10.37
  /// (at 512 9.04 -> 9.11), batch 12 8.87 -> 8.86; Llama-3.2-1B batch 8 1.98
  /// -> 1.94, 16 2.34 -> 2.32, 16 at 2048 3.01 -> 2.70. Batches 2 and 4
  /// (four chunks or more) keep three: 7.02 -> 7.16 and 1.66 -> 1.73 there.
  int batch_few_chunks_max_stages = 2;
  /// Batches of 9-16 with one chunk (up to 4096 positions) of a model whose
  /// bf16 O-projection gives a worker less than two stages of stage_bytes
  /// (Llama-3.2-1B, Qwen3-1.7B: ~64 KiB; Qwen3-8B: 254 KiB): four stages of
  /// 32 KiB, where the work area beside them still holds the staging buffer.
  /// At these batches a stage holds at most 256 columns
  /// (program::mm_max_cols), so a one-matrix tile fills half a 64 KiB stage,
  /// and such small tasks get one or two stages: four half-size stages keep
  /// twice their bytes in flight. H100, 2026-12-06, ms/step, 2 x 64 KiB -> 4
  /// x 32: Llama-3.2-1B batch 16 2.32 / 2.29 -> 2.23 / 2.24, 12 2.23 / 2.25
  /// -> 2.18 / 2.19, 16 at 2048 2.70 / 2.67 -> 2.63 / 2.61; Qwen3-1.7B batch
  /// 16 3.97 / 3.96 -> 3.87 / 3.86; but Qwen3-8B batch 16 9.09 -> 9.12 /
  /// 9.15, 12 8.77 -> 8.89, and Llama-3.2-1B batch 8 (512 columns a stage)
  /// 1.95 -> 2.00, 8 at 2048 2.29 -> 2.34.
  uint32_t batch_small_stage_bytes = 32 * 1024;
  int batch_small_max_stages = 4;
  /// Programs of more than 16 sequences or prefill lanes (program::mm_tokens
  /// > 16): stages of 64 KiB holding up to 256 columns (batch_wide_mm_cols),
  /// two of them beside the work area. The matmul loop pays a fixed cost per
  /// stage (the inputs' copies, the barrier, the wgmma issue and wait, the
  /// release), so fewer, larger stages stream faster than more bytes in
  /// flight: H100, Qwen3-8B batch 64, 32 KiB x 4 16.24 ms/step, x 3 16.33,
  /// 16 KiB x 8 19.01; H200, 64 KiB x 2 of 256 columns against 32 KiB x 4 of
  /// 128 (2026-12-06): Qwen3-8B batch 64 14.84 -> 13.75, batch 32 11.09 ->
  /// 10.08, 2000-token prefill 407.8 -> 374.2 ms; Llama-3.2-1B 4.22 -> 3.94,
  /// 2.93 -> 2.80, 104.0 -> 97.1. (Before, 32 KiB x 6 had beaten 64 KiB x 2
  /// when a stage held at most 128 columns: 8a8aff9, H200.)
  uint32_t batch_wide_stage_bytes = 64 * 1024;
  int batch_wide_max_stages = 6;
  /// Most columns of their matmul stages (0: program::mm_max_cols, 128;
  /// TargetDesc::mm_cols); a work area too large for two 64 KiB stages halves
  /// the stage, and then only tiles of up to 64 rows take 256 columns.
  int batch_wide_mm_cols = 256;
  /// Programs of more than 64 tokens a step on the wgmma engine (a prefill
  /// chunk over 64 lanes, a batch over 64): most lanes of one matmul task
  /// (TargetDesc::mm_tokens: 0 or 64 keeps program::kMmMaxTokens, else 128 =
  /// program::kMmWideMaxTokens), which the CUDA kernel's wide variant runs as
  /// wide tiles: each weight stage multiplied by all of a task's tokens.
  int batch_wide_mm_tokens = 0;
  /// Sequences of one attention task in Programs of several sequences with
  /// one chunk each (program::attn_group_serves): 0, the compiler's (the
  /// fewest, a power of two, that leave one round of tasks over the workers:
  /// batch 32 on 132 workers and 8 kv heads 2, batch 64 4), or 1, 2, 4, 8.
  int batch_attn_seqs = 0;
  /// q rows (lanes x the group's q heads) of one KvAppend / PrefillAttention
  /// task of a prefill Program at most, at least one lane (0:
  /// program::kPrefillAttnRows, 32; fewer: more, shorter tasks, each reading
  /// its kv head's cache once), in a step of up to program::kMmMaxTokens
  /// lanes. The GPU presets: 16.
  int prefill_attn_rows = 0;
  /// The same in a wider step (0: program::kPrefillAttnRows, 32; at most
  /// program::kPrefillAttnRowsWide, 64; the GPU presets: 64): at 256 lanes,
  /// 32 rows made a 2000-token prefill 16-22% faster than 16 (H100,
  /// 2026-12-07: Qwen3-8B 268.9 -> 226.2 ms, Llama-3.2-1B 62.9 -> 49.0) and
  /// 64 another 6-9% (wide tiles: 209 -> 196, 48.5 -> 44.0), each block
  /// reading its cache once for more lanes while the blocks of a layer still
  /// take one round of the workers.
  int prefill_attn_rows_wide = 0;
  bool l2_evict_first = true;  // weight copies carry an L2 evict-first hint
  /// The matmul tiles' tensor-core instructions (program::MmEngine): Hopper's
  /// warpgroup MMA reading both operands from shared memory, or mma.sync with
  /// ldmatrix fragments (exec/cuda/mm.cuh). mm_engine for Programs of more
  /// than 16 tokens a step (batches over 16, prefill lanes), batch_mm_engine
  /// for batches of 2 to 16. Measured on the H200 in one binary (wgmma vs
  /// mma.sync, ms/step at context 512): Qwen3-8B batch 64 19.71 vs 21.43,
  /// 2000-token prefill 708 vs 753 ms; Llama-3.2-1B batch 64 6.01 vs 6.42,
  /// prefill 223 vs 230; but batch 8 8.40 vs 8.04 and 2.48 vs 2.39.
  int mm_engine = program::kMmEngineWgmma;
  int batch_mm_engine = program::kMmEngineMma;
  // ---- partition choices for this device (0: the compiler's) ----
  int o_split_k = 0;
  int down_split_k = 0;
  /// O-proj's k-slices for batches of 2 to 16 tokens a step (0: the compiler's).
  int batch_o_split_k = 0;
  /// The same for Programs of more than 16 tokens a step, whose one-matrix
  /// tiles stream up to 128 rows a stage on the wgmma engine
  /// (program::mm_max_rows): more k-slices give a task more and shorter rows,
  /// so an input chunk serves a whole tall block.
  int batch_wide_o_split_k = 0;
  int batch_wide_down_split_k = 0;
  /// Matvec and matmul tasks cover a multiple of this many rows
  /// (CompileOptions::row_align when it is 0): one sequence, and Programs of
  /// several sequences or prefill lanes. A batch task pays its inputs (every
  /// token's k-slice) and its epilogue once, so fewer, taller tasks stream
  /// more weight bytes per input byte.
  int row_align = 8;
  int batch_row_align = 8;
};

/// The presets: "h100" and "h200" (H100 SXM / H200: 132 SMs, 227 KiB opt-in
/// shared memory per block; one sequence: O-proj as full-K rows, down_proj in
/// 2 k-slices, measured fastest on both; batches: O-proj in 4 k-slices, and
/// over 16 tokens a step down_proj in 4) and "generic" (the defaults above: 132 workers,
/// the compiler's own split-K choices; what host-only compiles use).
/// Throws keel::Error naming the presets for an unknown name ("auto" needs a
/// device: exec::cuda::device_target).
Target target_preset(std::string_view name);
std::vector<std::string> target_preset_names();

/// The Target of a device with these facts: the preset whose figures match and
/// whose name appears in the device name (an "NVIDIA H200" with 132 SMs and
/// 227 KiB is exactly "h200", so `keel compile --target h200` and a Program
/// compiled for the device agree), else the presets' tuning with the device's
/// SM count and shared memory, named after the device.
Target target_for_device(const std::string& device_name, int sms, uint32_t smem_per_block);

/// The Target a Program was compiled for, from its header (so a recompile can
/// keep its ring and loader policy) and its prefill attention tasks (their
/// blocks' rows, which the header does not record).
Target target_of(const program::Program& p);

/// TargetDesc::mm_tokens of a Program of `batch` lanes a step compiled for
/// `t`: Target::batch_wide_mm_tokens past program::kMmMaxTokens lanes on the
/// wgmma engine, else 0.
int mm_tokens_for(const Target& t, int batch);

/// One line: "h200: 132 SMs, 227 KiB/block; ring 3 x 64 KiB, work 27 KiB, ...".
std::string describe_target(const program::ProgramHeader& h);

}  // namespace keel::compiler
