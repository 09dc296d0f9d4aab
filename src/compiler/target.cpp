// Targets (target.h) and the device-plan pass: the ring's shape and the
// shared-memory layout from the target's budget and the tasks' work-area need,
// and each task's rows per ring stage (program/smem_plan.h).
#include "compiler/target.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "compiler/compiler.h"
#include "core/error.h"
#include "ops/matvec_residual.h"
#include "program/smem_plan.h"

namespace keel::compiler {

namespace {

constexpr uint32_t kMinStage = 16 * 1024;  // below this the ring is off

Target gpu_preset(const char* name) {
  Target t;
  t.name = name;
  t.sms = 132;
  t.smem_per_block = 227 * 1024;
  // Measured on the device (docs/log/results.md): O-proj as full-K row tiles
  // (H200: 6.56 -> 6.21 ms on the Qwen3-8B shape, 1.557 -> 1.414 on
  // Llama-3.2-1B, against one k-slice per kv-head group) and down_proj in 2
  // k-slices (H100: 1.243 -> 1.236 ms on Llama-3.2-1B, 6.04 -> 6.02 on Qwen3-8B,
  // against 4).
  t.o_split_k = 1;
  t.down_split_k = 2;
  // Over 16 tokens a step, with tall one-matrix tiles: down_proj in 4
  // k-slices, a tall block of ~124 rows a task, and O-proj in 4 (H200, ms/step
  // at context 512, against full-K rows: Qwen3-8B batch 64 17.13 -> 15.90,
  // batch 32 13.31 -> 11.79, 2000-token prefill 612 -> 572 ms, Llama-3.2-1B
  // batch 64 4.71 -> 4.19; 8 k-slices 16.98, 12.49, 609 ms, 4.66). Batches of
  // 2 to 16: O-proj in 4 as well (H200, `--o-split-k 4` against 1: Qwen3-8B
  // batch 16 9.87 -> 9.55, 8 8.14 -> 8.07; Llama-3.2-1B 2.69 -> 2.55, 2.24
  // -> 2.17). (The "wrong logits" O-proj k-slices were blamed for from
  // 2026-12-04 to -05 were greedy runs parting at near ties of random
  // weights: tests/common/greedy_compare.h.)
  t.batch_o_split_k = 4;
  t.batch_wide_o_split_k = 4;
  t.batch_wide_down_split_k = 4;
  // Batches: tasks in multiples of 64 rows (H100, 2026-12-05, ms/step at
  // context 512, two rounds, against 8: Qwen3-8B batch 8 9.27 vs 9.47, 16
  // 10.47 vs 10.75, 64 17.25 vs 17.67; Llama-3.2-1B 2.37 vs 2.41, 2.77 vs
  // 2.90, 4.69 vs 4.72; 32 rows: between the two, best only on Llama-3.2-1B
  // batch 64, 4.60).
  t.batch_row_align = 64;
  // Prefill attention in tasks of 16 q rows (4 lanes at 4 q heads a kv head):
  // 128 tasks a layer of a 64-lane step on 8 kv heads instead of 64 on 132
  // workers (H100, 2000-token prefill, against 32 rows, two rounds: Qwen3-8B
  // 381.0 / 381.6 -> 370.7 / 370.8 ms, Llama-3.2-1B 95.3 / 93.8 -> 91.6 /
  // 91.7; 8 rows was worse: Qwen3-8B 510.7 against 412-414 in its call).
  t.prefill_attn_rows = 16;
  // Wider steps: 64 rows (16 lanes at 4 q heads a kv head: 128 tasks a layer
  // of a 256-lane step on 8 kv heads, one round over 132 workers, each
  // reading its kv head's cache once for twice the lanes of 32 rows). H100,
  // 2026-12-07, 2000-token prefill in steps of 256 (wide tiles), two
  // interleaved rounds against 32 rows: Qwen3-8B 209.2 / 208.8 -> 195.5 /
  // 197.1 ms, Llama-3.2-1B 48.1 / 48.9 -> 44.0 / 44.0. (32 against 16 had
  // been 268.9 -> 226.2 ms on Qwen3-8B.)
  t.prefill_attn_rows_wide = 64;
  // Steps of more than 64 lanes: matmul tasks of up to 128 tokens (the
  // kernel's wide variant: one wgmma of N 128 a k-step and warpgroup for a
  // tall block, against two of N 32 over 64-token lane groups). H100,
  // 2026-12-07, 2000-token prefill in steps of 256, two interleaved rounds
  // against 64: Qwen3-8B 224.9 / 222.6 -> 209.2 / 210.0 ms; Llama-3.2-1B
  // 47.5 -> 48.0 / 48.0 (the same within 1%).
  t.batch_wide_mm_tokens = 128;
  return t;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::vector<std::string> target_preset_names() { return {"h100", "h200", "generic"}; }

Target target_preset(std::string_view name) {
  if (name == "h100") return gpu_preset("h100");
  if (name == "h200") return gpu_preset("h200");
  if (name == "generic") return Target{};
  fail("target '", name, "' is not a preset (h100, h200, generic", name == "auto" ? "; auto needs a CUDA build and a GPU" : "",
       ")");
}

Target target_for_device(const std::string& device_name, int sms, uint32_t smem_per_block) {
  const std::string dev = lower(device_name);
  for (const char* n : {"h100", "h200"}) {
    const Target t = target_preset(n);
    if (dev.find(n) != std::string::npos && t.sms == sms && t.smem_per_block == smem_per_block) return t;
  }
  // Another GPU: the presets' tuning with its own figures.
  Target t = gpu_preset("gpu");
  t.name = device_name.substr(0, sizeof(program::TargetDesc::name) - 1);
  t.sms = sms;
  t.smem_per_block = smem_per_block;
  return t;
}

Target target_of(const program::Program& p) {
  const program::TargetDesc& d = p.h.target;
  Target t;
  t.name = program::target_name(p.h);
  t.sms = d.sms;
  t.smem_per_block = d.smem_per_block;
  t.static_smem_reserve = d.static_smem;
  // The policy as given: a smaller stage the plan fell back to is found again
  // from the same budget; a ring the plan turned off stays off.
  t.stage_bytes = t.batch_wide_stage_bytes = d.n_stages > 0 ? d.stage_bytes : 0;
  t.batch_small_stage_bytes = t.stage_bytes;
  t.max_stages = t.batch_max_stages = t.batch_few_chunks_max_stages = t.batch_small_max_stages =
      t.batch_wide_max_stages = d.max_stages;
  t.max_inflight = t.batch_max_inflight = d.max_inflight;
  t.loader_hold = t.batch_loader_hold = d.loader_hold;
  t.l2_evict_first = d.l2_evict_first != 0;
  t.mm_engine = t.batch_mm_engine = d.mm_engine;
  t.o_split_k = t.batch_o_split_k = t.batch_wide_o_split_k = d.o_split_k;
  t.down_split_k = t.batch_wide_down_split_k = d.down_split_k;
  t.row_align = t.batch_row_align = d.row_align > 0 ? d.row_align : 8;
  t.batch_wide_mm_cols = d.mm_cols;
  t.batch_wide_mm_tokens = d.mm_tokens;
  t.batch_attn_seqs = d.attn_seqs > 0 ? d.attn_seqs : 1;
  // The prefill attention blocks are recorded only by the tasks: the largest
  // one's q rows give the same blocks again.
  const int g = p.h.n_kv_heads > 0 ? p.h.n_heads / p.h.n_kv_heads : 1;
  for (const program::TaskDesc& task : p.tasks)
    if (program::Opcode(task.opcode) == program::Opcode::PrefillAttention)
      t.prefill_attn_rows = t.prefill_attn_rows_wide = std::max(t.prefill_attn_rows, (task.b1 - task.b0) * g);
  return t;
}

int mm_tokens_for(const Target& t, int batch) {
  KEEL_CHECK(t.batch_wide_mm_tokens == 0 ||
                 (t.batch_wide_mm_tokens % program::kMmBoxCols == 0 && t.batch_wide_mm_tokens >= program::kMmMaxTokens &&
                  t.batch_wide_mm_tokens <= program::kMmWideMaxTokens),
             "compile: target ", t.name, ": matmul tasks of ", t.batch_wide_mm_tokens,
             " tokens must be 0 or a multiple of 64 from ", program::kMmMaxTokens, " to ", program::kMmWideMaxTokens);
  const bool wide = batch > program::kMmMaxTokens && t.mm_engine == program::kMmEngineWgmma;
  return wide && t.batch_wide_mm_tokens > program::kMmMaxTokens ? t.batch_wide_mm_tokens : 0;
}

namespace {

/// Target::batch_small_stage_bytes' test: the first O-projection has bf16
/// weights (the tensor-core tiles the measurements were of; other dtypes
/// stream row segments) and a worker's share under two stages of
/// t.stage_bytes, and the work area beside batch_small_max_stages stages of
/// batch_small_stage_bytes holds the attention staging buffer where the
/// streaming loop serves the shapes.
bool small_tasks(const Program& p, const Target& t) {
  if (t.batch_small_stage_bytes == 0 || t.batch_small_stage_bytes == t.stage_bytes) return false;
  for (const program::OpDesc& o : p.ops) {
    if (std::strcmp(o.name, "o_proj") != 0) continue;
    if (o.task_count == 0) return false;
    const int32_t w = ops::MatvecResidualOperands::from(p.tasks[o.task_begin]).weight;
    if (w < 0 || DType(p.buffers[size_t(w)].dtype) != DType::BF16) return false;
    uint64_t bytes = 0;
    for (uint32_t i = o.task_begin; i < o.task_begin + o.task_count; ++i) bytes += p.tasks[i].weight_bytes;
    const uint64_t workers = std::max<uint64_t>(1, uint64_t(p.h.n_workers));
    if (bytes / workers >= 2 * uint64_t(t.stage_bytes)) return false;
    const int stages = t.batch_small_max_stages > 0 ? t.batch_small_max_stages : program::kMaxRingStages;
    const int64_t work = int64_t(t.smem_per_block) - t.static_smem_reserve -
                         int64_t(stages) * t.batch_small_stage_bytes;
    return !program::attn_stream_serves(p.h) ||
           program::attn_stream_buf_end(p.h.head_dim, p.h.n_heads / p.h.n_kv_heads) <= work;
  }
  return false;
}

}  // namespace

void plan_target(Program& p, const Target& t) {
  program::TargetDesc& d = p.h.target;
  d = program::TargetDesc{};
  KEEL_CHECK(!t.name.empty() && t.name.size() < sizeof(d.name), "compile: target name '", t.name,
             "' must have 1 to ", sizeof(d.name) - 1, " characters");
  KEEL_CHECK(t.stage_bytes % 16 == 0 && t.batch_wide_stage_bytes % 16 == 0, "compile: target ", t.name,
             ": stage bytes ", t.stage_bytes, " / ", t.batch_wide_stage_bytes, " are not a multiple of 16");
  // The loader policy: the batch one for Programs of several sequences, with
  // the wide ring for more than 16 of them.
  const bool batch = p.h.batch > 1, wide = batch && program::mm_tokens(p.h.batch) > 16;
  const int max_inflight = batch ? t.batch_max_inflight : t.max_inflight;
  const int loader_hold = batch ? t.batch_loader_hold : t.loader_hold;
  const bool small = batch && program::mm_tokens(p.h.batch) == 16 && p.h.n_chunks == 1 && small_tasks(p, t);
  const int max_stages_opt = wide                  ? t.batch_wide_max_stages
                             : !batch               ? t.max_stages
                             : small                ? t.batch_small_max_stages
                             : p.h.n_chunks <= 2    ? t.batch_few_chunks_max_stages
                                                    : t.batch_max_stages;
  uint32_t stage_bytes = wide ? t.batch_wide_stage_bytes : small ? t.batch_small_stage_bytes : t.stage_bytes;
  const int mm_engine = wide ? t.mm_engine : t.batch_mm_engine;  // (one sequence: no matmul tiles)
  KEEL_CHECK(max_stages_opt >= 0 && max_stages_opt <= program::kMaxRingStages && max_inflight >= 0 &&
                 (loader_hold == 0 || loader_hold == 1) &&
                 (mm_engine == program::kMmEngineMma || mm_engine == program::kMmEngineWgmma),
             "compile: target ", t.name, ": bad ring or loader policy (max stages ", max_stages_opt, ", max in flight ",
             max_inflight, ", hold ", loader_hold, ", matmul engine ", mm_engine, ")");
  std::memcpy(d.name, t.name.data(), t.name.size());
  d.sms = t.sms;
  d.smem_per_block = t.smem_per_block;
  d.static_smem = t.static_smem_reserve;
  d.max_stages = max_stages_opt;
  d.loader_hold = loader_hold;
  d.l2_evict_first = t.l2_evict_first ? 1 : 0;
  d.mm_engine = mm_engine;
  d.o_split_k = wide ? t.batch_wide_o_split_k : batch ? t.batch_o_split_k : t.o_split_k;
  d.down_split_k = wide ? t.batch_wide_down_split_k : t.down_split_k;
  d.row_align = batch ? t.batch_row_align : t.row_align;
  KEEL_CHECK(t.batch_wide_mm_cols >= 0 && t.batch_wide_mm_cols <= program::kMmMaxCols &&
                 t.batch_wide_mm_cols % program::kMmBoxCols == 0,
             "compile: target ", t.name, ": matmul stage columns ", t.batch_wide_mm_cols, " must be 0 or a multiple of ",
             program::kMmBoxCols, " up to ", program::kMmMaxCols);
  d.mm_cols = wide ? t.batch_wide_mm_cols : 0;
  d.mm_tokens = mm_tokens_for(t, p.h.batch);
  if (program::mm_wide(p.h)) {
    // Wide tiles: an input buffer of the tile's tokens x at most
    // mm_max_cols_tokens columns (128: 32 KiB), and a stage of one tall
    // block's chunk (128 rows x those columns, 32 KiB), so that more of them
    // are in flight (4 beside the work area, where 64 KiB stages left 2).
    const int cap = program::mm_max_cols_tokens(program::mm_tile_tokens(p.h));
    if (d.mm_cols == 0 || d.mm_cols > cap) d.mm_cols = cap;
    if (stage_bytes > 0) stage_bytes = std::min<uint32_t>(stage_bytes, program::kMmTallRows * uint32_t(d.mm_cols) * 2);
  }
  // The largest attention group the partition made (a power of two: the
  // kernel gives each of a task's sequences kKernelWarps / attn_seqs warps).
  int seqs = 1;
  for (const program::TaskDesc& task : p.tasks)
    if (Opcode(task.opcode) == Opcode::Attention) seqs = std::max(seqs, task.b1 - task.b0);
  d.attn_seqs = 0;
  while (seqs > 1 && d.attn_seqs < seqs) d.attn_seqs = d.attn_seqs ? 2 * d.attn_seqs : 2;
  d.work_need = program::kernel_work_bytes(p.h);
  KEEL_CHECK(uint64_t(t.static_smem_reserve) + d.work_need <= t.smem_per_block, "compile: the tasks need ",
             d.work_need, " bytes of shared memory (hidden ", p.h.hidden, ", intermediate ", p.h.intermediate,
             ") + ", t.static_smem_reserve, " static; target ", t.name, " allows ", t.smem_per_block, " per block");
  const uint32_t budget = t.smem_per_block - t.static_smem_reserve;
  // As many stages as fit beside the work area (at most max_stages); while
  // fewer than 2 fit, halve the stage (rounded down to the work area's
  // alignment); below 16 KiB the ring is off.
  const int max_stages = max_stages_opt > 0 ? max_stages_opt : program::kMaxRingStages;
  uint32_t stage = stage_bytes;
  int stages = 0;
  while (stage >= kMinStage) {
    stages = std::min<int>(max_stages, int((budget - d.work_need) / stage));
    if (stages >= 2) break;
    stage = stage / 2 / program::kWorkAlign * program::kWorkAlign;  // the work area after the ring stays aligned
    stages = 0;
  }
  if (stages < 2) stage = 0, stages = 0;
  d.stage_bytes = stage;
  d.n_stages = stages;
  d.work_offset = uint32_t(stages) * stage;
  // The rest of the budget goes to the work area (attention prefetches K/V rows into it).
  d.work_bytes = std::max(d.work_need, (budget - d.work_offset) / program::kWorkAlign * program::kWorkAlign);
  d.dynamic_smem = d.work_offset + d.work_bytes;
  d.max_inflight = std::clamp(max_inflight, 0, std::max(stages - 1, 0));
  const program::DTypeOf declared = [&](int32_t id) { return DType(p.buffers[size_t(id)].dtype); };
  for (program::TaskDesc& task : p.tasks) {
    const program::StagePlan plan = program::plan_stage(p, task, stage, declared);
    program::set_stage_rows(task, plan.rows);
    program::set_stage_cols(task, plan.cols);
  }
}

std::string describe_target(const program::ProgramHeader& h) {
  const program::TargetDesc& d = h.target;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s: %d SMs, %u KiB shared memory per block (%u static reserved); ring %d x %u KiB, work area %u "
                "bytes at %u (need %u), dynamic %u bytes; loader: max in flight %d, hold %s, L2 evict-first %s; "
                "split-K o_proj %d, down_proj %d (0: compiler's); matmul tiles on %s",
                program::target_name(h).c_str(), d.sms, d.smem_per_block / 1024, d.static_smem, d.n_stages,
                d.stage_bytes / 1024, d.work_bytes, d.work_offset, d.work_need, d.dynamic_smem, d.max_inflight,
                d.loader_hold ? "on" : "off", d.l2_evict_first ? "on" : "off", d.o_split_k, d.down_split_k,
                d.mm_engine == program::kMmEngineWgmma ? "wgmma" : "mma.sync");
  std::string s = buf;
  if (d.mm_cols > 0) s += " in stages of at most " + std::to_string(d.mm_cols) + " columns";
  if (program::mm_wide(h)) s += ", wide tiles of up to " + std::to_string(program::mm_max_tokens(h)) + " tokens";
  if (d.attn_seqs > 1) s += "; attention tasks of up to " + std::to_string(d.attn_seqs) + " sequences";
  // Which loop a long attention chunk runs (the work area decides: a ring
  // stage more can cost the staged loop, docs/compiler.md).
  if (program::attn_stream_staged(h))
    s += "; long attention chunks stream K/V through shared memory";
  else if (program::attn_stream_serves(h))
    s += "; long attention chunks stream K/V through registers (shared memory needs a work area of " +
         std::to_string(program::attn_stream_buf_end(h.head_dim, h.n_heads / h.n_kv_heads)) + " bytes)";
  return s;
}

}  // namespace keel::compiler
