// The rules behind a Program's device plan (ProgramHeader::target, each task's
// stage_rows()): how much of the CUDA kernel's shared-memory work area the
// tasks need, and how many rows of a task's weight tile one ring stage holds.
// The compiler applies them for its Target (compiler/target.h); Program::
// validate() checks a Program against them with its declared weight dtypes, and
// the CUDA executor checks them again with the dtypes the checkpoint stores
// (exec/cuda/plan_check.h). The device code only follows the recorded numbers.
// Plain host code: the kernel's constants it depends on are repeated here and
// static_assert'ed equal in program_kernel.cu.
#pragma once

#include <cstdint>
#include <functional>

#include "core/dtype.h"
#include "program/program.h"

namespace keel::program {

inline constexpr int kKernelWarps = 8;          // compute warps per CTA (exec/cuda prog::kWarps)
inline constexpr int kKernelMaxHeadDim = 256;   // exec/cuda prog::kMaxHeadDim
/// Floats per compute warp of the attention tasks' streaming scratch (exec/cuda
/// attn_stream: the softmax weights of 8 heads x 8 positions and 8 rescale factors), after the
/// warps' partials in the work area.
inline constexpr int kKernelAttnStreamFloats = 72;
/// attn_stream's staging of K and V in shared memory (the long-context kernel
/// variants): per compute warp kAttnStreamStages blocks of 8 positions in
/// flight, each K rows then V rows, [8][hd + 8] bf16 each (16 bytes of padding
/// a row: a quad's fragment loads of K rows r and r + 1, and ldmatrix's 8 V
/// rows, fall on different banks). The buffer follows the warps' partials and
/// streaming scratch in the work area; a Program whose attention chunks may
/// grow long reserves it (attn_may_stream, kernel_work_bytes), otherwise
/// attn_stream keeps K and V in registers.
inline constexpr int kAttnStreamStages = 2;
/// A short context: Programs of up to this many positions keep the ring's third
/// 64 KiB stage up to 16 sequences (attn_may_stream), batches run one round of
/// attention chunks (the compiler's chunk rule), the engine keeps decode
/// Programs of this size beside full-context ones, and `keel bench` compiles
/// this many positions by default.
inline constexpr int kShortContext = 4096;
inline constexpr int64_t kAttnStreamMinHistory = 128;
constexpr int64_t attn_stream_stage_elems(int64_t hd) { return 16 * (hd + 8); }
/// Offset of the buffer in the work area: after q ([g][hd] fp32, rounded up to
/// 16 bytes), the position stash (16 bytes), the warps' partials
/// ([kKernelWarps][g][hd + 2] fp32) and streaming scratch.
constexpr int64_t attn_stream_buf_offset(int64_t hd, int64_t g) {
  const int64_t kv_off = (g * hd * 4 + 15) / 16 * 16 + 16;  // ops::attn_kv_offset
  return (kv_off + (kKernelWarps * g * (hd + 2) + kKernelWarps * kKernelAttnStreamFloats) * 4 + 15) / 16 * 16;
}
constexpr int64_t attn_stream_buf_end(int64_t hd, int64_t g) {
  return attn_stream_buf_offset(hd, g) + kKernelWarps * kAttnStreamStages * attn_stream_stage_elems(hd) * 2;
}
/// An Attention task over several sequences (TargetDesc::attn_seqs; the CUDA
/// kernel's attention_group) keeps, until its warps start streaming, the
/// sequences' positions and the pages they append to (8 x int64 each), the q
/// and k head norms' weights ([2][hd] fp32), the RoPE (cos, sin) of each
/// sequence's position ([S][hd / 2] float2), q ([S][g][hd] fp32) and the raw
/// q, k, v rows ([S][g + 2][hd] bf16) in the staging buffer
/// (attn_stream_buf_offset), which the streaming loop fills only after every
/// warp has read its q.
inline constexpr int kAttnMaxSeqs = 8;
constexpr int64_t attn_group_bytes(int64_t hd, int64_t g, int64_t seqs) {
  return 128 + 2 * hd * 4 + seqs * (hd / 2) * 8 + seqs * g * hd * 4 + seqs * (g + 2) * hd * 2;
}
static_assert(attn_group_bytes(32, 8, kAttnMaxSeqs) <= kKernelWarps * kAttnStreamStages * attn_stream_stage_elems(32) * 2 &&
              attn_group_bytes(64, 8, kAttnMaxSeqs) <= kKernelWarps * kAttnStreamStages * attn_stream_stage_elems(64) * 2 &&
              attn_group_bytes(128, 8, kAttnMaxSeqs) <= kKernelWarps * kAttnStreamStages * attn_stream_stage_elems(128) * 2,
              "a group's prep must fit the staging buffer");
/// PrefillAttention (src/ops/prefill_attention.h) in the CUDA kernel: a task's
/// rows are its lanes x g q heads, in mma row groups of 16 (at most
/// kKernelWarps); each row group's warps split a round of K/V positions, 16
/// each (at most 4 a round), staged in shared memory two rounds deep.
/// The compiler gives a task this many lanes: about 32 rows (enough tasks per
/// layer to fill the SMs at a 64-lane chunk, few enough re-reads of the cache).
inline constexpr int kPrefillAttnRows = 32;
/// The most rows of a task in a step of more than kMmMaxTokens lanes
/// (Target::prefill_attn_rows_wide may ask for up to this many; the default
/// stays kPrefillAttnRows).
inline constexpr int kPrefillAttnRowsWide = 64;
/// The most lanes of a task (the work area holds its rows: kernel_work_bytes).
constexpr int64_t prefill_attn_lanes(int64_t g, int64_t seq_lanes) {
  const int64_t rows = seq_lanes > 64 ? kPrefillAttnRowsWide : kPrefillAttnRows;  // (64: kMmMaxTokens)
  const int64_t l = g >= rows ? 1 : rows / g;
  return l < seq_lanes ? l : seq_lanes;
}
/// Row groups of 16 of a task of `rows` rows, and warps a row group's positions are split over.
constexpr int prefill_attn_row_groups(int64_t rows) { return int((rows + 15) / 16); }
constexpr int prefill_attn_phases(int64_t rows) {
  const int n = kKernelWarps / prefill_attn_row_groups(rows);
  return n > 4 ? 4 : n < 1 ? 1 : n;
}
/// The work-area layout of a task of `rows` rows at head_dim hd (bytes):
/// q [16 x row groups][hd + 8] bf16 at 0; the pages of the positions the
/// task reads (int32, up to kPrefillAttnPages; more are looked up at each row)
/// at prefill_attn_pages_offset; then the K/V rounds ([2 buffers][K, V][16 x
/// phases][hd + 8] bf16), which after the last round hold the warps' (o, m,
/// l) [warps][16][hd + 2] fp32 for the merge.
inline constexpr int kPrefillAttnPages = 256;
constexpr int64_t prefill_attn_pages_offset(int64_t hd, int64_t rows) {
  return (16 * prefill_attn_row_groups(rows) * (hd + 8) * 2 + 15) / 16 * 16;
}
constexpr int64_t prefill_attn_kv_offset(int64_t hd, int64_t rows) {
  return prefill_attn_pages_offset(hd, rows) + int64_t(kPrefillAttnPages) * 4;
}
constexpr int64_t prefill_attn_work_bytes(int64_t hd, int64_t rows) {
  const int64_t kv = 2 * 2 * 16 * prefill_attn_phases(rows) * (hd + 8) * 2;
  const int64_t merge = int64_t(prefill_attn_row_groups(rows)) * prefill_attn_phases(rows) * 16 * (hd + 2) * 4;
  return prefill_attn_kv_offset(hd, rows) + (kv > merge ? kv : merge);
}
/// Whether a Program's prompt lanes attend with PrefillAttention (after
/// KvAppend) rather than the Attention opcode's chunks: prefill lanes, a
/// head_dim the tensor-core body is instantiated for (16, 32, 64, 128) and
/// at most kKernelWarps row groups a task.
constexpr bool prefill_attn_serves(int64_t hd, int64_t g, int64_t seq_lanes) {
  return seq_lanes > 1 && (hd == 16 || hd == 32 || hd == 64 || hd == 128) && g >= 1 &&
         prefill_attn_row_groups(prefill_attn_lanes(g, seq_lanes) * g) <= kKernelWarps;
}
inline constexpr int kMaxRingStages = 8;        // exec/cuda prog::kMaxRingStages
inline constexpr uint32_t kMaxStageRows = 1024;  // TileDesc::cap is an int16
inline constexpr uint32_t kWorkAlign = 128;      // the work area's size is a multiple of this

/// Bytes of the work area the tasks of `h` need at least: a matvec's bf16
/// input vector (the longest reduction), or the attention task's fp32 scratch,
/// or the merge's maxima, sums and totals, or (several sequences) the matmul
/// engine's input buffers (mm_work_bytes); rounded up to kWorkAlign.
uint32_t kernel_work_bytes(const ProgramHeader& h);

/// Whether the streaming attention loops (attn_stream, attn_stream_smem) serve
/// the shapes of `h`: head_dim 32, 64 or 128, at most 8 q heads a kv head,
/// pages a multiple of 8 positions.
bool attn_stream_serves(const ProgramHeader& h);

/// Whether the Program reserves attn_stream's K/V staging buffer (kernel_work_bytes): the shapes attn_stream
/// serves, a chunk's longest history up to the last position (attn_longest_history) past kAttnStreamMinHistory, and a context over
/// 4096 or over 16 sequences (the ring's 32 KiB stages); up to 4096 and 16 sequences keep the third 64 KiB
/// ring stage instead (H200: batch 1 at position 512 was 2.5-4% slower with two).
bool attn_may_stream(const ProgramHeader& h);

/// Whether a long attention chunk of `h` streams K/V through shared memory
/// (attn_stream_smem) rather than registers (attn_stream): the shapes they
/// serve, and the staging buffer's end (attn_stream_buf_end) inside the
/// planned work area, the test the CUDA kernel makes (ops/attention.cuh),
/// whether or not attn_may_stream reserved it.
bool attn_stream_staged(const ProgramHeader& h);

/// Whether a Program may hold Attention tasks of several sequences
/// (TargetDesc::attn_seqs): one chunk a (sequence, kv head), no prefill lanes,
/// and the shapes the streaming loops serve (attn_stream_serves), whose
/// staging buffer such a Program's work area always holds (kernel_work_bytes).
bool attn_group_serves(const ProgramHeader& h);

/// The weight dtype of buffer `id` as the executor will hold it.
using DTypeOf = std::function<DType(int32_t id)>;

// Matmul tiles (tasks serving several sequences, stage_cols() > 0): the CUDA
// kernel's tensor-core engine (exec/cuda/mm.cuh) multiplies each stage of
// stage_rows() (at most mm_max_rows()) rows x stage_cols() columns of bf16 weights
// with the same columns of up to kMmMaxTokens sequences' bf16 inputs, which the
// compute warps copy into work-area buffers of mm_tokens(batch) x
// (mm_stage_cols() + 8) bf16 (8 to 33 KiB each, at least two). The loader
// fills a stage with TMA tensor copies (boxes of kMmBoxCols columns x 16 or
// stage_rows() rows, 128-byte swizzle): matrix m's column group g (kMmBoxCols
// columns) is a panel of stage_rows() rows x 128 bytes at
// (m * kc / kMmBoxCols + g) * stage_rows() * 128 bytes, so a stage holds
// exactly nmat * rows * kc * 2 bytes and starts 1024-byte aligned.
inline constexpr uint32_t kMmRows = 64;       // weight rows per matrix in a stage at most (4 mma row groups of 16)
inline constexpr uint32_t kMmTallRows = 128;  // the same for one matrix on the wgmma engine (a warpgroup's 64 rows each)
inline constexpr int kMmMaxTokens = 64;       // sequences one matmul task serves at most
static_assert(kMmMaxTokens == 64, "prefill_attn_lanes names the steps of more than kMmMaxTokens lanes");
inline constexpr int kMmBoxCols = 64;         // columns of one TMA box (128 bytes of bf16: the swizzle span)
inline constexpr uint32_t kMmStageAlign = 1024;  // a stage's alignment (the 128-byte swizzle repeats every 1 KiB)

/// Rows of a matmul input buffer: the batch rounded up to 8 (mma's groups), at most kMmMaxTokens.
constexpr int mm_tokens(int batch) { return ((batch < kMmMaxTokens ? batch : kMmMaxTokens) + 7) / 8 * 8; }
/// Wide matmul tiles (TargetDesc::mm_tokens; the CUDA kernel's wide variant):
/// a task multiplies each weight stage by up to this many tokens, each
/// warpgroup one wgmma of up to N 128 (one matrix: its 64 rows x every token)
/// or two of N 64 (GateUp's two matrices: half the tokens each). At 256
/// tokens (N 256, 128 accumulators a thread) ptxas serialises the kernel's
/// wgmma for want of registers (C7511), so 128 is the most.
inline constexpr int kMmWideMaxTokens = 128;
/// Most lanes of one matmul task of `h`: TargetDesc::mm_tokens, 0 = kMmMaxTokens.
constexpr int mm_max_tokens(const ProgramHeader& h) { return h.target.mm_tokens > 0 ? h.target.mm_tokens : kMmMaxTokens; }
/// Rows of a matmul input buffer of `h`: mm_tokens(batch), or past
/// kMmMaxTokens (wide tiles) the batch up to mm_max_tokens rounded up to 64,
/// which the wide tiles' wgmma widths (multiples of 32 a warpgroup, 64 for
/// one matrix) never read past.
constexpr int mm_tile_tokens(const ProgramHeader& h) {
  const int t = h.batch < mm_max_tokens(h) ? h.batch : mm_max_tokens(h);
  return t <= kMmMaxTokens ? mm_tokens(t) : (t + 63) / 64 * 64;
}
/// Whether a Program's matmul tiles are wide (the CUDA kernel's wide variant runs it).
constexpr bool mm_wide(const ProgramHeader& h) { return mm_tile_tokens(h) > kMmMaxTokens; }
/// Weight rows per matrix in a stage at most: kMmTallRows for one matrix on
/// the wgmma engine (Programs of more than 16 tokens a step), where each
/// warpgroup multiplies its own 64 rows by all the tokens, so an input chunk
/// serves twice the weight rows and a 32 KiB stage is full (at 64 tokens a
/// 64-row stage of 128 columns read as many input bytes from L2 as weight
/// bytes, and used half the stage); else kMmRows (the mma.sync engine's four
/// row groups; GateUp's two matrices already make a stage of 128 rows).
constexpr uint32_t mm_max_rows(int mm_engine, int batch, int nmat) {
  return nmat == 1 && mm_engine == kMmEngineWgmma && mm_tokens(batch) > 16 ? kMmTallRows : kMmRows;
}
/// Columns per stage of a matmul tile at most: 512 for up to 8 sequences,
/// 256 for 16, 128 for 32 or more (an input buffer stays near 8 to 17 KiB,
/// so the work area leaves room for three 64 KiB stages at batch 8).
/// The same for a tile of t tokens (wide tiles too: 128 columns of up to 128
/// tokens, an input buffer of at most 32 KiB).
constexpr int mm_max_cols_tokens(int t) { return t <= 8 ? 512 : t <= 16 ? 256 : 128; }
constexpr int mm_max_cols(int batch) { return mm_max_cols_tokens(mm_tokens(batch)); }
/// The Program's bound on a matmul stage's columns: the target's
/// (TargetDesc::mm_cols, a multiple of kMmBoxCols up to kMmMaxCols) or
/// mm_max_cols of its tile's tokens.
constexpr int mm_stage_cols(const ProgramHeader& h) {
  return h.target.mm_cols > 0 ? h.target.mm_cols : mm_max_cols_tokens(mm_tile_tokens(h));
}
inline constexpr int kMmMaxCols = 512;  // TargetDesc::mm_cols at most
inline constexpr uint32_t kMmRedBytes = 4 * 2 * 32 * 4 * 4;  // the split-warp partials at the work area's start

/// Work-area bytes of the matmul engine of a Program (0 for batch 1): the
/// partials and two input buffers of mm_tile_tokens(h) x (mm_stage_cols + 8).
uint32_t mm_work_bytes(const ProgramHeader& h);

/// Which weight bytes a matvec-family task reads (the same as exec/cuda
/// weight_tile()): rows [first, first + row1 - row0) of matrix m0 (and m1:
/// GateUp's up projection), columns [k0, k1) of `cols`. m0 < 0: not a matvec opcode.
struct TileSource {
  int32_t m0 = -1, m1 = -1;
  int64_t first = 0, k0 = 0, k1 = 0, cols = 0;
};
TileSource tile_source(const Program& p, const TaskDesc& t);

/// How task `t` streams its weight tile through a ring of `stage_bytes` stages.
struct StagePlan {
  uint32_t rows = 0;  // stage_rows(): rows per stage (0: the task does not stream through the ring)
  uint32_t cols = 0;  // stage_cols(): columns per stage (matmul tiles), 0: whole row segments
};

/// The plan of task `t` (the compiler records it as stage_rows(t) and
/// stage_cols(t)):
///  * one sequence: whole row segments [k0, k1), as many rows as fit a stage;
///  * 2 .. mm_max_tokens(h) sequences (LmHead: kMmMaxTokens) with bf16 weights whose slice k1 - k0 is a
///    multiple of kMmBoxCols, in stages that are a multiple of kMmStageAlign:
///    a matmul tile of min(mm_max_rows(), the task's rows rounded up to 16) rows x
///    the largest multiple of kMmBoxCols columns that divides k1 - k0 (in at
///    most 255 chunks), is at most mm_stage_cols(), and fits a stage;
///  * otherwise 0 (global memory): not a matvec opcode, no ring, more
///    sequences, matrices of different dtypes, a row segment, stride or tile
///    start not a multiple of 16 bytes, or nothing fits a stage.
/// Weight buffers start 16-byte aligned (the executor's allocations are).
StagePlan plan_stage(const Program& p, const TaskDesc& t, uint32_t stage_bytes, const DTypeOf& dtype_of);

/// Checks the header's device plan and every task's stage_rows() against the
/// rules above with `dtype_of` (default: the Program's declared dtypes);
/// throws keel::Error naming the field or task at fault.
void check_plan(const Program& p, const DTypeOf& dtype_of = {});

}  // namespace keel::program
