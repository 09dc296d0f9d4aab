// The Target compile input and the device plan it becomes (compiler/target.h,
// program/smem_plan.h): presets, the header's ring / shared-memory layout /
// loader policy / options, every task's rows per ring stage (never more than a
// stage), the Program v5 round trip, and the Program hash (same options -> same
// hash, another target -> another hash); the order in which a wide
// Program's matrix rows go to the workers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "common/tiny_config.h"
#include "compiler/compiler.h"
#include "compiler/report.h"
#include "core/error.h"
#include "program/serialize.h"
#include "ops/attention.h"
#include "program/smem_plan.h"

namespace keel::compiler {
namespace {

using namespace program;

/// Two layers (tiny_config's) of a model shape with 8 kv heads, bf16 as
/// checkpoints store it; the Qwen3-8B shape (hidden 4096, intermediate 12288,
/// 32/8 heads of 128).
model::ModelConfig shape_of(model::Arch arch, int64_t hidden, int64_t intermediate, int64_t heads, int64_t head_dim,
                            int64_t max_position) {
  model::ModelConfig c = testing::tiny_config(arch);
  c.hidden = hidden;
  c.intermediate = intermediate;
  c.n_heads = heads;
  c.n_kv_heads = 8;
  c.head_dim = head_dim;
  c.max_position = max_position;
  c.dtype = DType::BF16;
  return c;
}
model::ModelConfig qwen3_8b_two_layers() {
  model::ModelConfig c = shape_of(model::Arch::Qwen3, 4096, 12288, 32, 128, 40960);
  c.vocab = 151936;
  return c;
}

CompileOptions for_target(const Target& t, int ctx = 512) {
  CompileOptions o;
  o.target = t;
  o.max_context = ctx;
  return o;
}

std::string error_of(const model::ModelConfig& c, const CompileOptions& o) {
  try {
    compile(c, o);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

/// Bytes of one row segment of task t's weights and how many matrices stream
/// (the same rule the device's weight_tile() follows).
void tile_of(const Program& p, const TaskDesc& t, uint64_t* seg, int* nmat) {
  const int32_t m = Opcode(t.opcode) == Opcode::MatvecResidual ? t.buf[1] : t.buf[2];
  const uint64_t esz = dtype_size(DType(p.buffers[size_t(m)].dtype));
  *seg = uint64_t(t.k1 - t.k0) * esz;
  *nmat = Opcode(t.opcode) == Opcode::GateUp ? 2 : 1;
}

TEST(Target, PresetsAndDevices) {
  for (const char* n : {"h100", "h200"}) {
    const Target t = target_preset(n);
    EXPECT_EQ(t.name, n);
    EXPECT_EQ(t.sms, 132);
    EXPECT_EQ(t.smem_per_block, 232448u);  // 227 KiB: cudaDevAttrMaxSharedMemoryPerBlockOptin on H100 SXM and H200
    EXPECT_EQ(t.stage_bytes, 64u * 1024);
    EXPECT_EQ(t.max_inflight, 1);
    EXPECT_EQ(t.loader_hold, 1);
    EXPECT_TRUE(t.l2_evict_first);
    EXPECT_EQ(t.mm_engine, program::kMmEngineWgmma);
    EXPECT_EQ(t.batch_mm_engine, program::kMmEngineMma);
    EXPECT_EQ(t.o_split_k, 1);  // what tune_for_gpu set before
    EXPECT_EQ(t.down_split_k, 2);
  }
  EXPECT_EQ(target_preset("generic").o_split_k, 0);
  std::string e;
  try {
    target_preset("a100");
  } catch (const Error& x) {
    e = x.what();
  }
  EXPECT_NE(e.find("h100, h200"), std::string::npos) << e;
  // A device is its preset when name and figures agree, so `--target h200` and auto agree on an H200.
  EXPECT_EQ(target_for_device("NVIDIA H200", 132, 232448).name, "h200");
  EXPECT_EQ(target_for_device("NVIDIA H100 80GB HBM3", 132, 232448).name, "h100");
  const Target pcie = target_for_device("NVIDIA H100 PCIe", 114, 232448);
  EXPECT_EQ(pcie.name, "NVIDIA H100 PCIe");
  EXPECT_EQ(pcie.sms, 114);
  EXPECT_EQ(pcie.o_split_k, 1);  // the GPU tuning, whatever the card
}

TEST(Target, HeaderRecordsThePlan) {
  const model::ModelConfig c = qwen3_8b_two_layers();
  const Program p = compile(c, for_target(target_preset("h200")));
  const TargetDesc& d = p.h.target;
  EXPECT_EQ(target_name(p.h), "h200");
  EXPECT_EQ(p.h.n_workers, 132);  // workers 0: the target's SMs
  EXPECT_EQ(d.sms, 132);
  EXPECT_EQ(d.stage_bytes, 64u * 1024);
  EXPECT_EQ(d.work_need, kernel_work_bytes(p.h));
  // 227 KiB - 8 KiB static reserve = 219 KiB: three 64 KiB stages beside the
  // work area's need (~24 KiB), the rest (27 KiB) to the work area.
  EXPECT_EQ(d.n_stages, 3);
  EXPECT_EQ(d.work_offset, 3u * 64 * 1024);
  EXPECT_EQ(d.work_bytes, (232448u - 8192 - 3 * 65536) / 128 * 128);
  EXPECT_EQ(d.dynamic_smem, d.work_offset + d.work_bytes);
  EXPECT_LE(d.static_smem + d.dynamic_smem, d.smem_per_block);
  EXPECT_EQ(d.max_inflight, 1);
  EXPECT_EQ(d.loader_hold, 1);
  // The options as given, and the target's split-K choices applied.
  EXPECT_EQ(p.h.options.workers, 0);
  EXPECT_EQ(p.h.options.max_context, 512);
  EXPECT_EQ(p.h.options.weight_dtype, int32_t(DType::BF16));
  for (const OpDesc& op : p.ops) {
    const std::string n(op.name);
    if (n != "o_proj" && n != "down_proj") continue;
    std::set<int32_t> slices;  // distinct k-slices
    for (uint32_t i = op.task_begin; i < op.task_begin + op.task_count; ++i) slices.insert(p.tasks[i].k0);
    EXPECT_EQ(slices.size(), n == "o_proj" ? 1u : 2u) << n;
  }
  // The report shows the hash's subject: target, ring, tiles.
  const std::string r = describe_target(p.h) + report(p, 3350);
  EXPECT_NE(r.find("ring 3 x 64 KiB"), std::string::npos) << r;
  EXPECT_NE(r.find("rows/stage"), std::string::npos) << r;
}

// A Program of a context over 4096 whose attention chunks may grow past
// kAttnStreamMinHistory positions reserves attn_stream's K/V staging buffer
// in its work area (the ring keeps what is left: two 64 KiB stages for
// Qwen3-8B's shapes at 32K), and its launches stream from 129 positions a
// chunk on; at contexts 512 and 4096 nothing is reserved.
TEST(Target, LongContextProgramsReserveTheAttentionStagingBuffer) {
  const model::ModelConfig c = qwen3_8b_two_layers();
  const Program shortp = compile(c, for_target(target_preset("h200")));
  EXPECT_FALSE(attn_may_stream(shortp.h));
  EXPECT_EQ(shortp.h.target.n_stages, 3);
  // The default context keeps the third ring stage, whatever its chunks.
  const Program defaultp = compile(c, for_target(target_preset("h200"), 4096));
  EXPECT_FALSE(attn_may_stream(defaultp.h));
  EXPECT_EQ(defaultp.h.target.n_stages, 3);
  const Program longp = compile(c, for_target(target_preset("h200"), 32768));
  ASSERT_TRUE(attn_may_stream(longp.h));
  const TargetDesc& d = longp.h.target;
  const int64_t hd = longp.h.head_dim, g = longp.h.n_heads / longp.h.n_kv_heads;
  EXPECT_EQ(attn_stream_buf_offset(hd, g) % 16, 0);
  EXPECT_EQ(int64_t(d.work_need), (attn_stream_buf_end(hd, g) + kWorkAlign - 1) / kWorkAlign * kWorkAlign);
  EXPECT_GE(int64_t(d.work_bytes), attn_stream_buf_end(hd, g));
  EXPECT_EQ(d.n_stages, 2);
  EXPECT_EQ(d.stage_bytes, 64u * 1024);
  EXPECT_FALSE(ops::Attention::streams(longp.h, kAttnStreamMinHistory * (longp.h.n_chunks - 1)));
  EXPECT_TRUE(ops::Attention::streams(longp.h, 32768));
}

TEST(Target, BatchProgramsTakeTheBatchPolicy) {
  // Several sequences: the whole ring in flight, no holds, three stages (two
  // where a (sequence, kv head) has one or two attention chunks; the rest to
  // the work area), one round of attention chunks over the workers
  // (one where that is two),
  // tasks in multiples of 64 rows; over 16
  // (and prefill lanes) the wide ring of 64 KiB stages of up to 256 matmul
  // columns, as many as fit of 6;
  // one sequence keeps the decode policy. An explicit policy is kept by all.
  const model::ModelConfig c = qwen3_8b_two_layers();
  CompileOptions o = for_target(target_preset("h200"));
  o.batch = 8;
  const Program b = compile(c, o);
  EXPECT_EQ(b.h.target.max_inflight, 0);
  EXPECT_EQ(b.h.target.loader_hold, 0);
  // One attention chunk a (sequence, kv head) (below): two stages, the rest
  // to the work area.
  EXPECT_EQ(b.h.target.max_stages, 2);
  EXPECT_EQ(b.h.target.n_stages, 2);
  EXPECT_EQ(b.h.target.stage_bytes, 65536u);
  EXPECT_EQ(b.h.target.work_bytes, (232448u - 8192 - 2 * 65536) / 128 * 128);
  // 132 / (8 x 8 kv heads) = 2 chunks a (sequence, kv head) would fill the
  // workers; one, whose task writes its output itself, is faster.
  EXPECT_EQ(b.h.n_chunks, 1);
  {  // four sequences: one round, four chunks
    CompileOptions f = o;
    f.batch = 4;
    const Program four = compile(c, f);
    EXPECT_EQ(four.h.n_chunks, 132 / (4 * c.n_kv_heads));
    EXPECT_EQ(four.h.target.max_stages, 3);  // (more than two chunks: three stages)
    EXPECT_EQ(four.h.target.n_stages, 3);
    // The report says which loop a long chunk runs: three stages leave no
    // room for the staging buffer (90640 bytes at Qwen3-8B's shapes), two do.
    EXPECT_FALSE(program::attn_stream_staged(four.h));
    EXPECT_NE(describe_target(four.h).find("through registers (shared memory needs a work area of 90640 bytes)"),
              std::string::npos) << describe_target(four.h);
    EXPECT_TRUE(program::attn_stream_staged(b.h));
    EXPECT_NE(describe_target(b.h).find("long attention chunks stream K/V through shared memory"), std::string::npos);
  }
  {  // over 4096 positions, two rounds of chunks (faster at context 8192)
    CompileOptions l = o;
    l.max_context = 8192;
    EXPECT_EQ(compile(c, l).h.n_chunks, 2 * 132 / (8 * c.n_kv_heads));
  }
  EXPECT_EQ(b.h.target.row_align, 64);
  for (const program::TaskDesc& t : b.tasks)  // a task's rows end at a multiple of 64 or at its matrix's end
    if (program::Opcode(t.opcode) == program::Opcode::GateUp) {
      EXPECT_TRUE(t.row1 % 64 == 0 || t.row1 == c.intermediate);
    }
  for (const int lanes : {0, 64}) {  // batch 32; a prefill Program of 64 lanes
    CompileOptions w = o;
    w.batch = lanes ? 1 : 32;
    w.prefill_chunk = lanes;
    const Program wide = compile(c, w);
    EXPECT_EQ(wide.h.target.stage_bytes, 65536u) << lanes;
    EXPECT_EQ(wide.h.target.mm_cols, 256) << lanes;
    EXPECT_EQ(wide.h.target.max_stages, 6) << lanes;
    EXPECT_EQ(wide.h.target.n_stages,
              int(std::min<uint32_t>(6, (232448u - 8192 - wide.h.target.work_need) / 65536u))) << lanes;
  }
  o.batch = 1;
  const Program one = compile(c, o);
  EXPECT_EQ(one.h.target.max_inflight, 1);
  EXPECT_EQ(one.h.target.loader_hold, 1);
  EXPECT_EQ(one.h.target.n_stages, 3);
  EXPECT_EQ(one.h.n_chunks, 132 / c.n_kv_heads);
  EXPECT_EQ(one.h.target.row_align, 8);
  Target t = target_preset("h200");
  t.max_inflight = t.batch_max_inflight = 1;
  t.max_stages = t.batch_max_stages = t.batch_few_chunks_max_stages = 0;
  o = for_target(t);
  o.batch = 8;
  const Program given = compile(c, o);
  EXPECT_EQ(given.h.target.max_inflight, 1);
  EXPECT_EQ(given.h.target.n_stages, 3);
  // A recompile from the header keeps the batch Program's policy.
  const Target back = target_of(b);
  EXPECT_EQ(back.batch_max_inflight, 0);
  EXPECT_EQ(back.batch_max_stages, 2);
  EXPECT_EQ(back.batch_few_chunks_max_stages, 2);
  EXPECT_EQ(back.batch_row_align, 64);
  EXPECT_EQ(program_hash(compile(c, options_of(b))), program_hash(b));
  // The matmul engine: mma.sync up to 16 tokens a step, wgmma above; recorded
  // and kept by a recompile.
  EXPECT_EQ(b.h.target.mm_engine, program::kMmEngineMma);
  o = for_target(target_preset("h200"));
  o.batch = 32;
  const Program wide = compile(c, o);
  EXPECT_EQ(wide.h.target.mm_engine, program::kMmEngineWgmma);
  t = target_preset("h200");
  t.mm_engine = program::kMmEngineMma;
  o = for_target(t);
  o.batch = 32;
  const Program mma = compile(c, o);
  EXPECT_EQ(mma.h.target.mm_engine, program::kMmEngineMma);
  EXPECT_EQ(target_of(mma).mm_engine, program::kMmEngineMma);
  EXPECT_EQ(program_hash(compile(c, options_of(mma))), program_hash(mma));
  EXPECT_NE(program_hash(mma), program_hash(wide));
  // Split-K: one sequence O-proj full-K rows and down_proj in 2 k-slices;
  // batches O-proj in 4, down_proj in 2 up to 16 tokens a step and 4 above
  // (tall tiles); recorded, kept by a recompile, and an explicit choice wins.
  EXPECT_EQ(one.h.target.o_split_k, 1);
  EXPECT_EQ(one.h.target.down_split_k, 2);
  EXPECT_EQ(b.h.target.o_split_k, 4);
  EXPECT_EQ(b.h.target.down_split_k, 2);
  EXPECT_EQ(wide.h.target.o_split_k, 4);
  EXPECT_EQ(wide.h.target.down_split_k, 4);
  EXPECT_EQ(program_hash(compile(c, options_of(wide))), program_hash(wide));
  auto mv_tasks = [](const Program& p, const char* op) {
    int n = 0, sliced = 0;
    for (const TaskDesc& task : p.tasks)
      if (std::string(p.ops[task.op].name) == op && p.ops[task.op].layer == 0) ++n, sliced += task.k1 - task.k0 < 4096;
    return std::make_pair(n, sliced);
  };
  EXPECT_EQ(mv_tasks(wide, "down_proj").second, mv_tasks(wide, "down_proj").first);  // k-slices of 12288 / 4
  EXPECT_EQ(mv_tasks(wide, "o_proj").second, mv_tasks(wide, "o_proj").first);  // k-slices of 4096 / 4
  EXPECT_EQ(mv_tasks(one, "o_proj").second, 0);
  o.o_split_k = 2;
  EXPECT_EQ(compile(c, o).h.options.o_split_k, 2);
}

// Batches of 9-16 with one attention chunk of a model whose O-projection
// gives a worker less than two 64 KiB stages (Llama-3.2-1B's shape: 2048 x
// 2048 bf16, ~64 KiB a worker): four stages of 32 KiB, whose work area still
// holds the staging buffer; batch 8 (512 columns a stage), two chunks, the
// Qwen3-8B shape (254 KiB a worker) and weights other than bf16 keep two of
// 64 KiB; an explicit stage size is kept for every Program; a recompile from
// the header gives the same.
TEST(Target, SmallBatchTasksTakeFourHalfStages) {
  const model::ModelConfig c = shape_of(model::Arch::Llama, 2048, 8192, 32, 64, 131072);
  CompileOptions o = for_target(target_preset("h100"));
  auto ring = [&](const model::ModelConfig& m, int batch, int ctx) {
    CompileOptions x = o;
    x.batch = batch;
    x.max_context = ctx;
    const Program p = compile(m, x);
    return std::make_pair(p.h.target.n_stages, p.h.target.stage_bytes);
  };
  for (const int batch : {9, 12, 16}) {
    EXPECT_EQ(ring(c, batch, 512), std::make_pair(4, 32768u)) << batch;
    EXPECT_EQ(ring(c, batch, 4096), std::make_pair(4, 32768u)) << batch;
  }
  EXPECT_EQ(ring(c, 8, 512), std::make_pair(2, 65536u));       // 512 columns a stage
  EXPECT_EQ(ring(c, 17, 512).second, 65536u);                  // the wide ring
  EXPECT_EQ(ring(c, 16, 8192), std::make_pair(2, 65536u));     // two chunks
  EXPECT_EQ(ring(qwen3_8b_two_layers(), 16, 512), std::make_pair(2, 65536u));
  model::ModelConfig f32 = c;  // weights the tiles do not serve: row segments, the usual ring
  f32.dtype = DType::F32;
  EXPECT_EQ(ring(f32, 16, 512).second, 65536u);
  o.batch = 16;
  const Program p = compile(c, o);
  EXPECT_TRUE(program::attn_stream_staged(p.h));
  EXPECT_EQ(program_hash(compile(c, options_of(p))), program_hash(p));
  Target t = target_preset("h100");
  t.stage_bytes = t.batch_small_stage_bytes = t.batch_wide_stage_bytes = 65536;  // --stage-kib 64
  o = for_target(t);
  o.batch = 16;
  EXPECT_EQ(compile(c, o).h.target.stage_bytes, 65536u);
}

// The target's O-proj k-slices give way, in batch Programs, to the most that
// keep every slice whole 64-column boxes of the tensor-core tiles (a hidden
// size of 896 = 4 x 224 = 2 x 448 = 7 x 128: 2 slices); an explicit choice is
// taken as given.
TEST(Target, BatchSlicesKeepWholeBoxes) {
  model::ModelConfig c = qwen3_8b_two_layers();
  c.hidden = 896;
  c.n_heads = 14;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.intermediate = 4864;
  CompileOptions o = for_target(target_preset("h200"));
  o.batch = 32;
  auto o_slices = [](const Program& p) {
    std::set<int32_t> k0;
    for (const TaskDesc& task : p.tasks)
      if (std::string(p.ops[task.op].name) == "o_proj" && p.ops[task.op].layer == 0) k0.insert(task.k0);
    return k0.size();
  };
  const Program wide = compile(c, o);
  EXPECT_EQ(o_slices(wide), 2u);
  for (const TaskDesc& task : wide.tasks)
    if (Opcode(task.opcode) == Opcode::MatvecResidual) {
      EXPECT_GT(program::stage_cols(task), 0u) << "k0 " << task.k0;
    }
  o.o_split_k = 4;
  EXPECT_EQ(o_slices(compile(c, o)), 4u);
}

TEST(Target, RowsPerStageNeverExceedAStage) {
  for (uint32_t stage_kib : {64u, 48u, 16u}) {
    Target t = target_preset("h100");
    t.stage_bytes = stage_kib * 1024;
    for (const model::ModelConfig& c : {qwen3_8b_two_layers(), testing::tiny_config(model::Arch::Llama)}) {
      const Program p = compile(c, for_target(t));
      const uint32_t S = p.h.target.stage_bytes;
      int streaming = 0;
      for (const TaskDesc& task : p.tasks) {
        const uint32_t r = stage_rows(task);
        const Opcode op = Opcode(task.opcode);
        if (op == Opcode::Attention || op == Opcode::Step) {
          EXPECT_EQ(r, 0u);
          continue;
        }
        if (r == 0) continue;
        ++streaming;
        uint64_t seg = 0;
        int nmat = 0;
        tile_of(p, task, &seg, &nmat);
        EXPECT_LE(uint64_t(r) * uint64_t(nmat) * seg, S) << describe_task(p, uint32_t(&task - p.tasks.data()));
        EXPECT_LE(r, kMaxStageRows);
        // As many rows as fit: one more would not.
        EXPECT_TRUE(r == kMaxStageRows || uint64_t(r + 1) * nmat * seg > S);
      }
      EXPECT_GT(streaming, 0);
    }
  }
  // Qwen3-8B in bf16 and 64 KiB stages: a gate_up stage holds 4 rows of each matrix (2 x 4 x 8 KiB).
  const Program p = compile(qwen3_8b_two_layers(), for_target(target_preset("h100")));
  for (const TaskDesc& t : p.tasks)
    if (Opcode(t.opcode) == Opcode::GateUp) {
      EXPECT_EQ(stage_rows(t), 65536u / (2 * 4096 * 2));
    }
  // No ring: nothing through the ring.
  Target off = target_preset("h100");
  off.stage_bytes = 0;
  const Program q = compile(qwen3_8b_two_layers(), for_target(off));
  EXPECT_EQ(q.h.target.n_stages, 0);
  for (const TaskDesc& t : q.tasks) EXPECT_EQ(stage_rows(t), 0u);
  // Several sequences per task: matmul tiles of the task's rows rounded up to
  // 16 (at most kMmRows) x the largest column chunk that divides the task's k
  // range in groups of kMmBoxCols, is at most mm_max_cols(batch) and fits a stage.
  CompileOptions b3 = for_target(target_preset("h100"));
  b3.batch = 3;
  const Program r = compile(qwen3_8b_two_layers(), b3);
  int tiles = 0;
  for (const TaskDesc& t : r.tasks) {
    const Opcode op = Opcode(t.opcode);
    if (op == Opcode::Attention || op == Opcode::Step || op == Opcode::RmsNorm) {
      EXPECT_EQ(stage_rows(t), 0u);
      continue;
    }
    ++tiles;
    const std::string what = describe_task(r, uint32_t(&t - r.tasks.data()));
    const uint32_t cap = stage_rows(t), kc = stage_cols(t), nmat = op == Opcode::GateUp ? 2 : 1;
    const uint32_t k = uint32_t(t.k1 - t.k0);
    EXPECT_EQ(cap, std::min<uint32_t>(mm_max_rows(r.h.target.mm_engine, 3, int(nmat)),
                                      uint32_t(t.row1 - t.row0 + 15) / 16 * 16))
        << what;
    EXPECT_LE(cap, kMmRows) << what;  // three sequences: the mma.sync engine's four row groups
    ASSERT_GT(kc, 0u) << what;
    EXPECT_EQ(kc % kMmBoxCols, 0u);
    EXPECT_EQ(k % kc, 0u) << what;
    EXPECT_LE(kc, uint32_t(mm_max_cols(3)));
    EXPECT_LE(nmat * cap * 2 * kc, r.h.target.stage_bytes) << what;
    // The largest such chunk: the next divisor up would not fit.
    for (uint32_t up = kc + kMmBoxCols; up <= std::min<uint32_t>(k, uint32_t(mm_max_cols(3))); up += kMmBoxCols) {
      if (k % up == 0) {
        EXPECT_GT(nmat * cap * 2 * up, r.h.target.stage_bytes) << what;
      }
    }
  }
  EXPECT_GT(tiles, 0);
  // More sequences than a matmul task serves (kMmMaxTokens without the wide
  // tiles): the matrix operators' tasks take groups of lanes (65: 40 + 25),
  // each a matmul tile; the LM head keeps every lane, so it reads global
  // memory. (The presets' wide tiles serve all 65 in one group:
  // Target.WideTilesTakeUpTo128Tokens.)
  CompileOptions b65 = b3;
  b65.batch = kMmMaxTokens + 1;
  b65.target.batch_wide_mm_tokens = 0;
  const Program big = compile(testing::tiny_config(model::Arch::Llama), b65);
  std::set<std::pair<int, int>> groups;
  for (const TaskDesc& t : big.tasks) {
    const Opcode op = Opcode(t.opcode);
    if (op == Opcode::QkvProj || op == Opcode::GateUp || op == Opcode::MatvecResidual) {
      groups.insert({t.b0, t.b1});
      // (whole 64-column boxes: the tiny config's down_proj slices of 176 columns read global memory)
      EXPECT_EQ(stage_rows(t) > 0, (t.k1 - t.k0) % kMmBoxCols == 0) << describe_task(big, uint32_t(&t - big.tasks.data()));
    } else {
      EXPECT_EQ(stage_rows(t), 0u) << describe_task(big, uint32_t(&t - big.tasks.data()));
    }
  }
  EXPECT_EQ(groups, (std::set<std::pair<int, int>>{{0, 40}, {40, 65}}));
}

// Over 16 tokens a step on the wgmma engine, a one-matrix tile streams up to
// kMmTallRows rows a stage (each warpgroup its own 64), so a 256-column chunk
// fills the 64 KiB stage; GateUp's two matrices keep kMmRows each. On the
// mma.sync engine (--mm-engine mma) every tile keeps kMmRows.
TEST(Target, WideWgmmaProgramsStreamTallOneMatrixTiles) {
  for (const int engine : {kMmEngineWgmma, kMmEngineMma}) {
    Target t = target_preset("h200");
    t.mm_engine = engine;
    CompileOptions o = for_target(t);
    o.batch = 64;
    o.down_split_k = 8;  // 4096 x 8 / 132 rows a task: tall blocks of 128 and the rest
    const Program p = compile(qwen3_8b_two_layers(), o);
    ASSERT_EQ(p.h.target.mm_engine, engine);
    EXPECT_EQ(p.h.target.stage_bytes, 64u * 1024);
    bool saw_tall = false;
    for (const TaskDesc& task : p.tasks) {
      const uint32_t cap = stage_rows(task);
      if (stage_cols(task) == 0) continue;
      const std::string what = describe_task(p, uint32_t(&task - p.tasks.data()));
      const bool two = Opcode(task.opcode) == Opcode::GateUp;
      const uint32_t rows = uint32_t(task.row1 - task.row0 + 15) / 16 * 16;
      const uint32_t most = engine == kMmEngineWgmma && !two ? kMmTallRows : kMmRows;
      EXPECT_EQ(cap, std::min(most, rows)) << what;
      EXPECT_LE((two ? 2 : 1) * cap * stage_cols(task) * 2, p.h.target.stage_bytes) << what;
      if (cap == kMmTallRows) {
        saw_tall = true;
        EXPECT_EQ(cap * stage_cols(task) * 2, p.h.target.stage_bytes) << what << ": a tall block fills the stage";
      }
    }
    EXPECT_EQ(saw_tall, engine == kMmEngineWgmma);
  }
}

// Target::batch_wide_mm_cols: with 256 and 64 KiB stages a tall block or a
// GateUp block streams 256 columns a stage (half the stages), the work area
// holds two input buffers of that width, the Program records it (a
// recompile from the Program's target gives the same plan), and Programs of
// 16 tokens or fewer ignore it. Widths that are not a multiple of 64 or over
// 512 are refused.
TEST(Target, WideMatmulStagesOfMoreColumns) {
  Target t = target_preset("h200");
  t.batch_wide_stage_bytes = 64 * 1024;
  t.batch_wide_mm_cols = 256;
  CompileOptions o = for_target(t);
  o.batch = 64;
  const Program p = compile(qwen3_8b_two_layers(), o);
  EXPECT_EQ(p.h.target.mm_cols, 256);
  EXPECT_EQ(p.h.target.stage_bytes, 64u * 1024);
  EXPECT_EQ(mm_stage_cols(p.h), 256);
  EXPECT_GE(p.h.target.work_need, mm_work_bytes(p.h));
  EXPECT_EQ(mm_work_bytes(p.h), kMmRedBytes + 2u * 64u * (256u + 8u) * 2u);
  bool saw_gate_up = false, saw_tall = false;
  for (const TaskDesc& task : p.tasks) {
    if (stage_cols(task) == 0) continue;
    const std::string what = describe_task(p, uint32_t(&task - p.tasks.data()));
    EXPECT_LE(stage_cols(task), 256u) << what;
    const bool two = Opcode(task.opcode) == Opcode::GateUp;
    if (two || stage_rows(task) == kMmTallRows) {
      EXPECT_EQ(stage_cols(task), 256u) << what;
      EXPECT_EQ((two ? 2 : 1) * stage_rows(task) * stage_cols(task) * 2, p.h.target.stage_bytes) << what;
    }
    saw_gate_up |= two;
    saw_tall |= stage_rows(task) == kMmTallRows;
  }
  EXPECT_TRUE(saw_gate_up && saw_tall);
  EXPECT_EQ(target_of(p).batch_wide_mm_cols, 256);
  EXPECT_NO_THROW(check_plan(p));
  // Batches of 16 or fewer keep the rule.
  CompileOptions o8 = o;
  o8.batch = 8;
  EXPECT_EQ(compile(qwen3_8b_two_layers(), o8).h.target.mm_cols, 0);
  for (const int bad : {100, 576, -64}) {
    Target b = t;
    b.batch_wide_mm_cols = bad;
    EXPECT_THROW(compile(qwen3_8b_two_layers(), for_target(b)), Error) << bad;
  }
}

TEST(Target, SmallSharedMemoryHalvesTheStageOrRefuses) {
  Target t = target_preset("h100");
  t.smem_per_block = 100 * 1024;  // 92 KiB after the reserve: ~24 KiB of work need leaves room for 2 x 32 KiB
  const Program p = compile(qwen3_8b_two_layers(), for_target(t));
  EXPECT_EQ(p.h.target.stage_bytes, 32u * 1024);
  EXPECT_EQ(p.h.target.n_stages, 2);
  // A stage larger than the budget (keel compile --stage-kib 999) halves down to
  // one that fits, keeping the work area after the ring aligned: a valid plan.
  Target big = target_preset("h100");
  big.stage_bytes = 999 * 1024;
  const Program q = compile(qwen3_8b_two_layers(), for_target(big));
  EXPECT_GE(q.h.target.n_stages, 2);
  EXPECT_EQ(q.h.target.stage_bytes % 128, 0u);
  EXPECT_NO_THROW(q.validate());
  t.smem_per_block = 16 * 1024;  // less than the work area needs
  const std::string e = error_of(qwen3_8b_two_layers(), for_target(t));
  EXPECT_NE(e.find("shared memory"), std::string::npos) << e;
  EXPECT_NE(e.find("h100"), std::string::npos) << e;
}

TEST(Target, RoundTripAndHash) {
  const model::ModelConfig c = qwen3_8b_two_layers();
  const Program p = compile(c, for_target(target_preset("h200")));
  const std::vector<uint8_t> bytes = serialize(p);
  const Program q = deserialize(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(std::memcmp(&q.h.target, &p.h.target, sizeof(TargetDesc)), 0);
  EXPECT_EQ(std::memcmp(&q.h.options, &p.h.options, sizeof(OptionsDesc)), 0);
  for (size_t i = 0; i < p.tasks.size(); ++i) ASSERT_EQ(stage_rows(q.tasks[i]), stage_rows(p.tasks[i]));
  const uint64_t h = program_hash(p);
  EXPECT_EQ(program_hash(q), h);
  EXPECT_EQ(hash_hex(h).size(), 16u);
  // Same options -> same hash (compiling is deterministic); options_of rebuilds it.
  EXPECT_EQ(program_hash(compile(c, for_target(target_preset("h200")))), h);
  EXPECT_EQ(program_hash(compile(c, options_of(p))), h);
  // Another target, SM count, ring or split -> another hash.
  Target t = target_preset("h200");
  t.sms = 114;
  Target ring = target_preset("h200");
  ring.stage_bytes = 48 * 1024;
  CompileOptions split = for_target(target_preset("h200"));
  split.down_split_k = 4;
  for (const CompileOptions& o : {for_target(target_preset("h100")), for_target(t), for_target(ring), split})
    EXPECT_NE(program_hash(compile(c, o)), h) << o.target.name;
}

// Attention tasks over several sequences (Target::batch_attn_seqs): by
// default the fewest, a power of two, that give a batch's (sequence, kv head)
// pairs one round of tasks over the workers (Qwen3-8B on 132: batch 16 one,
// 32 two, 64 four), only with one chunk each and no prefill lanes; the
// header records the largest group (the kernel's warps a sequence follow from
// it), the work area keeps its size (the group's prep lives in the staging
// buffer), and a Program whose tasks hold more sequences than its header
// allows is refused.
TEST(Target, BatchAttentionTasksTakeSeveralSequences) {
  const model::ModelConfig c = qwen3_8b_two_layers();
  auto groups = [&](int batch, int want, int ctx = 512, int prefill = 0) {
    CompileOptions o = for_target(target_preset("h100"), ctx);
    o.batch = batch;
    o.prefill_chunk = prefill;
    o.target.batch_attn_seqs = want;
    const Program p = compile(c, o);
    std::set<int> sizes;
    for (const TaskDesc& t : p.tasks)
      if (Opcode(t.opcode) == Opcode::Attention) sizes.insert(t.b1 - t.b0);
    return std::make_pair(p.h.target.attn_seqs, sizes);
  };
  using G = std::pair<int, std::set<int>>;
  EXPECT_EQ(groups(16, 0), G(0, {1}));
  EXPECT_EQ(groups(32, 0), G(2, {2}));
  EXPECT_EQ(groups(64, 0), G(4, {4}));
  EXPECT_EQ(groups(64, 0, 8192), G(4, {4}));  // one chunk there too
  EXPECT_EQ(groups(8, 0, 8192), G(0, {1}));   // four chunks: never grouped
  EXPECT_EQ(groups(64, 1), G(0, {1}));
  EXPECT_EQ(groups(64, 8), G(8, {8}));
  EXPECT_EQ(groups(12, 8), G(8, {4, 8}));     // 8 + 4
  EXPECT_EQ(groups(1, 0, 512, 64), G(0, {}));   // a prefill Program: PrefillAttention tiles
  CompileOptions o = for_target(target_preset("h100"));
  o.batch = 64;
  const Program p = compile(c, o);
  EXPECT_EQ(p.h.target.n_stages, 2);
  EXPECT_EQ(p.h.target.stage_bytes, 65536u);
  EXPECT_EQ(program_hash(compile(c, options_of(p))), program_hash(p));
  const std::vector<uint8_t> bytes = serialize(p);
  EXPECT_EQ(deserialize(bytes.data(), bytes.size(), "mem").h.target.attn_seqs, 4);
  o.target.batch_attn_seqs = 3;
  EXPECT_NE(error_of(c, o).find("1, 2, 4 or 8"), std::string::npos) << error_of(c, o);
  Program bad = p;
  bad.h.target.attn_seqs = 2;  // tasks of 4 sequences
  try {
    bad.validate();
    ADD_FAILURE() << "a task of more sequences than the header allows was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sequences"), std::string::npos) << e.what();
  }
  bad.h.target.attn_seqs = 6;  // not a power of two
  EXPECT_THROW(bad.validate(), Error);
}

TEST(Target, ValidateRefusesAnInconsistentPlan) {
  const Program good = compile(qwen3_8b_two_layers(), for_target(target_preset("h100")));
  auto error_in = [](const Program& p) {
    try {
      p.validate();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error_in(good), "");
  Program p = good;
  for (TaskDesc& t : p.tasks)
    if (stage_rows(t) > 0) {
      set_stage_rows(t, stage_rows(t) + 1);  // one row more than a stage holds
      break;
    }
  EXPECT_NE(error_in(p).find("rows per ring stage"), std::string::npos) << error_in(p);
  p = good;
  p.h.target.work_bytes = 128;  // less than the tasks need
  EXPECT_NE(error_in(p).find("work area"), std::string::npos) << error_in(p);
  p = good;
  p.h.target.n_stages = 4;  // the layout no longer adds up
  EXPECT_NE(error_in(p), "");
  p = good;
  p.h.target.loader_hold = 4;  // a hold mode that lost its A/B (only 0 and 1 exist)
  EXPECT_NE(error_in(p).find("loader policy"), std::string::npos) << error_in(p);
  p = good;
  p.h.target.mm_engine = 2;  // no such engine
  EXPECT_NE(error_in(p).find("matmul engine"), std::string::npos) << error_in(p);
}

}  // namespace
}  // namespace keel::compiler

namespace keel::compiler {
namespace {

using namespace program;

/// Task index -> worker of a compiled Program.
std::vector<int> worker_of(const Program& p) {
  std::vector<int> w(p.tasks.size(), -1);
  for (int k = 0; k < p.h.n_workers; ++k)
    for (const uint32_t* t = p.worker_begin(k); t != p.worker_end(k); ++t) w[*t] = k;
  return w;
}

// The partition's water-filling sizes each worker's share of a matrix
// operator; in a Program of several tokens a step the rows then go to the
// workers in the order they are predicted to finish, so the smaller tiles
// (one 64-row block where the rounding left others two) hold the first rows,
// which down_proj's first k-slices read. A Program of one token keeps the
// rows in worker order (measured: the finish order made Qwen3-8B's batch 1
// 1% slower on the H100).
TEST(Partition, WideProgramsHandTheFirstRowsToTheFirstToFinish) {
  const model::ModelConfig c = qwen3_8b_two_layers();
  for (const int batch : {1, 64}) {
    CompileOptions o = for_target(target_preset("h100"));
    o.batch = batch;
    const Program p = compile(c, o);
    const std::vector<int> w = worker_of(p);
    int gate_ups = 0;
    for (const OpDesc& od : p.ops) {
      if (Opcode(od.opcode) != Opcode::GateUp) continue;
      ++gate_ups;
      std::vector<const TaskDesc*> ts;
      for (uint32_t t = od.task_begin; t < od.task_begin + od.task_count; ++t) ts.push_back(&p.tasks[t]);
      std::sort(ts.begin(), ts.end(), [](const TaskDesc* a, const TaskDesc* b) { return a->row0 < b->row0; });
      int32_t smallest = INT32_MAX, largest = 0;
      for (const TaskDesc* t : ts) {
        smallest = std::min(smallest, t->row1 - t->row0);
        largest = std::max(largest, t->row1 - t->row0);
      }
      if (batch == 1) {
        for (size_t i = 1; i < ts.size(); ++i)
          EXPECT_LT(w[size_t(ts[i - 1] - p.tasks.data())], w[size_t(ts[i] - p.tasks.data())])
              << "layer " << od.layer << ": batch-1 rows out of worker order at row " << ts[i]->row0;
      } else {
        ASSERT_EQ(largest, 2 * smallest) << "layer " << od.layer;  // 12288 rows of 64-row blocks on 132 workers
        // Every one-block tile before every two-block tile.
        size_t i = 0;
        while (i < ts.size() && ts[i]->row1 - ts[i]->row0 == smallest) ++i;
        EXPECT_GT(i, size_t(0));
        for (size_t k = i; k < ts.size(); ++k)
          EXPECT_EQ(ts[k]->row1 - ts[k]->row0, largest)
              << "layer " << od.layer << ": a small tile at row " << ts[k]->row0 << " after the large ones began at row "
              << ts[i]->row0;
      }
    }
    EXPECT_EQ(gate_ups, 2);
  }
}

}  // namespace
}  // namespace keel::compiler

namespace keel::compiler {
namespace {
// The GPU presets' prefill attention blocks: 16 q rows (4 lanes at Qwen3-8B's
// 4 q heads a kv head) in steps of up to 64 lanes, 64 rows (16 lanes) in
// wider ones (Target::prefill_attn_rows_wide; 0: 32 rows); an explicit
// --prefill-attn-rows sets both (tools/keel/target_flags.cpp).
TEST(Target, WidePrefillStepsTakeBlocksOf64Rows) {
  auto block_lanes = [](int lanes, int wide_rows) {
    Target t = target_preset("h100");
    if (wide_rows >= 0) t.prefill_attn_rows_wide = wide_rows;
    CompileOptions o = for_target(t);
    o.prefill_chunk = lanes;
    const Program p = compile(qwen3_8b_two_layers(), o);
    std::set<int> n;
    for (const TaskDesc& d : p.tasks)
      if (Opcode(d.opcode) == Opcode::PrefillAttention) n.insert(d.b1 - d.b0);
    return n;
  };
  EXPECT_EQ(block_lanes(64, -1), (std::set<int>{4}));
  EXPECT_EQ(block_lanes(256, -1), (std::set<int>{16}));
  EXPECT_EQ(block_lanes(100, -1), (std::set<int>{4, 16}));  // 6 blocks of 16 and one of 4
  EXPECT_EQ(block_lanes(256, 0), (std::set<int>{8}));       // 0: program::kPrefillAttnRows
  EXPECT_EQ(block_lanes(256, 16), (std::set<int>{4}));
  // At most 64 rows in a wide step (program::kPrefillAttnRowsWide), 32 in a narrower one.
  EXPECT_EQ(block_lanes(256, 64), (std::set<int>{16}));
  EXPECT_EQ(block_lanes(256, 128), (std::set<int>{16}));
  EXPECT_EQ(block_lanes(64, 64), (std::set<int>{4}));  // (the narrow steps' rows: the preset's 16)
}

// Target::batch_wide_mm_tokens: a step of more than 64 lanes on the wgmma
// engine takes matmul tasks of up to 128 tokens (the CUDA kernel's wide
// variant), stages of one tall block's 128 columns (32 KiB), and a
// recompile from the Program's own options gives the same Program; a step
// of 64 lanes or fewer is the same Program as without the knob.
TEST(Target, WideTilesTakeUpTo128Tokens) {
  Target t = target_preset("h100");
  t.batch_wide_mm_tokens = 128;
  CompileOptions o = for_target(t);
  o.prefill_chunk = 256;
  const Program p = compile(qwen3_8b_two_layers(), o);
  EXPECT_EQ(p.h.target.mm_tokens, 128);
  EXPECT_TRUE(program::mm_wide(p.h));
  EXPECT_EQ(program::mm_tile_tokens(p.h), 128);
  EXPECT_EQ(p.h.target.mm_cols, 128);
  EXPECT_EQ(p.h.target.stage_bytes, 32768u);
  EXPECT_GE(p.h.target.work_bytes, program::mm_work_bytes(p.h));
  std::set<std::pair<int, int>> groups;
  std::set<uint32_t> rows;
  for (const TaskDesc& d : p.tasks) {
    const Opcode op = Opcode(d.opcode);
    if (op != Opcode::QkvProj && op != Opcode::GateUp && op != Opcode::MatvecResidual) continue;
    groups.insert({d.b0, d.b1});
    EXPECT_EQ(stage_cols(d), 128u) << describe_task(p, uint32_t(&d - p.tasks.data()));
    if (op != Opcode::GateUp) rows.insert(stage_rows(d));
  }
  EXPECT_EQ(groups, (std::set<std::pair<int, int>>{{0, 128}, {128, 256}}));
  EXPECT_TRUE(rows.count(128u)) << "tall blocks";
  program::check_plan(p);
  EXPECT_EQ(program_hash(compile(qwen3_8b_two_layers(), options_of(p))), program_hash(p));
  // 64 lanes: not wide, the same Program as the preset's
  o.prefill_chunk = 64;
  const Program narrow = compile(qwen3_8b_two_layers(), o);
  EXPECT_EQ(narrow.h.target.mm_tokens, 0);
  CompileOptions base = for_target(target_preset("h100"));
  base.prefill_chunk = 64;
  EXPECT_EQ(program_hash(narrow), program_hash(compile(qwen3_8b_two_layers(), base)));
  // The mma.sync engine has no wide tiles.
  t.mm_engine = program::kMmEngineMma;
  o = for_target(t);
  o.prefill_chunk = 256;
  EXPECT_EQ(compile(qwen3_8b_two_layers(), o).h.target.mm_tokens, 0);
}
}  // namespace
}  // namespace keel::compiler
