// smem_plan.h: the work area's need, a task's rows per ring stage, and the
// check of a Program's device plan.
#include "program/smem_plan.h"

#include <algorithm>

#include "core/error.h"
#include "ops/ops.h"

namespace keel::program {

uint32_t kernel_work_bytes(const ProgramHeader& h) {
  // bf16 activation vector of a matvec (the longest reduction) ...
  int64_t vec = std::max<int64_t>(h.hidden, h.intermediate);
  vec = std::max<int64_t>(vec, int64_t(h.n_heads) * h.head_dim);
  const int64_t act = (vec + 8) * 2;
  // ... or the attention task's fp32 scratch (q and the position, then the
  // warps' partials and, after them, the streaming scratch)
  const int64_t g = h.n_heads / std::max(h.n_kv_heads, 1);
  int64_t attn = (std::max<int64_t>(kKernelMaxHeadDim + int64_t(kKernelWarps) * (kKernelMaxHeadDim + 2),
                                    g * h.head_dim + int64_t(kKernelWarps) * g * (h.head_dim + 2)) +
                  int64_t(kKernelWarps) * kKernelAttnStreamFloats) * 4 + 64;
  // ... with attn_stream's K/V staging when the chunks may stream
  // (and always with tasks of several sequences, whose warps all stream)
  if (attn_may_stream(h) || h.target.attn_seqs > 1) attn = std::max(attn, attn_stream_buf_end(h.head_dim, g));
  // ... or the merge's maxima, sums and totals
  const int64_t merge = (2 * int64_t(h.n_chunks) + 1) * g * 4;
  const int64_t mm = mm_work_bytes(h);
  // ... or a PrefillAttention task's q, K/V rounds and merge
  if (prefill_attn_serves(h.head_dim, g, h.seq_lanes))
    attn = std::max(attn, prefill_attn_work_bytes(h.head_dim, prefill_attn_lanes(g, h.seq_lanes) * g));
  const int64_t need = (std::max({act, attn, merge, mm}) + kWorkAlign - 1) / kWorkAlign * kWorkAlign;
  KEEL_CHECK(need <= int64_t(UINT32_MAX), "program: the tasks' shared-memory work area (", need, " bytes) is too large");
  return uint32_t(need);
}

bool attn_stream_serves(const ProgramHeader& h) {
  const int64_t hd = h.head_dim, g = h.n_heads / std::max(h.n_kv_heads, 1);
  return h.n_kv_heads > 0 && (hd == 32 || hd == 64 || hd == 128) && g <= 8 && h.page_size % 8 == 0;
}

bool attn_may_stream(const ProgramHeader& h) {
  if (!attn_stream_serves(h) || h.max_context < 2) return false;
  // The buffer costs a ring stage: 3 x 64 KiB -> 2 up to 16 sequences (4 x
  // 32 KiB instead of 5 above). H200, `keel bench` (Programs of 4096
  // positions timed at 512): Qwen3-8B batch 1 5.01 -> 5.14 ms, Llama-3.2-1B
  // 1.05 -> 1.09, Qwen3-8B batch 8 7.89 -> 8.18; but Qwen3-8B batch 64 18.2
  // -> 17.0, and at 32K context Llama-3.2-1B 2.13 -> 1.63, Qwen3-8B 8.02 ->
  // 7.03. So Programs of up to 4096 positions (`keel bench`'s, `keel generate
  // --context 4096`) and batches up to 16 keep the ring; full-context
  // Programs (`keel generate`'s default) pay the stage at short positions.
  if (h.max_context <= kShortContext && mm_tokens(h.batch) <= 16) return false;
  // A chunk's longest history up to the last position (ops::Attention::streams).
  return attn_longest_history(h.max_context - 1, h.n_chunks, h.attn_min_chunk) > kAttnStreamMinHistory;
}

bool attn_stream_staged(const ProgramHeader& h) {
  return attn_stream_serves(h) &&
         attn_stream_buf_end(h.head_dim, h.n_heads / h.n_kv_heads) <= int64_t(h.target.work_bytes);
}

bool attn_group_serves(const ProgramHeader& h) {
  return h.n_chunks == 1 && h.seq_lanes <= 1 && attn_stream_serves(h);
}

uint32_t mm_work_bytes(const ProgramHeader& h) {
  if (h.batch <= 1) return 0;
  // The split-warp partials (4 row groups x 2 matrices x 32 lanes x 4 floats),
  // then two input buffers of [tokens][max cols + 8] bf16.
  return kMmRedBytes + 2 * uint32_t(mm_tile_tokens(h)) * uint32_t(mm_stage_cols(h) + 8) * 2;
}

TileSource tile_source(const Program& p, const TaskDesc& t) {
  TileSource s;
  switch (Opcode(t.opcode)) {  // the same matrices as exec/cuda weight_tile()
    case Opcode::QkvProj:
      s.m0 = t.buf[ops::QkvProjOperands::kWeight];
      s.first = int64_t(t.row0) - t.arg[ops::QkvProjOperands::kPartRow0];
      s.cols = p.h.hidden;
      break;
    case Opcode::GateUp:
      s.m0 = t.buf[ops::GateUpOperands::kGateW];
      s.m1 = t.buf[ops::GateUpOperands::kUpW];
      s.first = t.row0;
      s.cols = p.h.hidden;
      break;
    case Opcode::LmHead:
      s.m0 = t.buf[ops::LmHeadOperands::kWeight];
      s.first = t.row0;
      s.cols = p.h.hidden;
      break;
    case Opcode::MatvecResidual:
      s.m0 = t.buf[ops::MatvecResidualOperands::kWeight];
      if (s.m0 < 0 || size_t(s.m0) >= p.buffers.size()) return TileSource{};
      s.first = t.row0;
      s.cols = p.buffers[size_t(s.m0)].cols;
      s.k0 = t.k0;
      s.k1 = t.k1;
      break;
    default: return s;
  }
  if (s.m0 < 0 || size_t(s.m0) >= p.buffers.size() || (s.m1 >= 0 && size_t(s.m1) >= p.buffers.size()))
    return TileSource{};
  if (s.k1 == 0) s.k1 = s.cols;
  return s;
}

StagePlan plan_stage(const Program& p, const TaskDesc& t, uint32_t stage_bytes, const DTypeOf& dtype_of) {
  if (stage_bytes == 0) return {};
  const TileSource src = tile_source(p, t);
  if (src.m0 < 0) return {};
  const int64_t k0 = src.k0, k1 = src.k1, cols = src.cols;
  const DType dt = dtype_of(src.m0);
  const int64_t esz = dt == DType::F32 ? 4 : 2;
  const int64_t nmat = src.m1 >= 0 ? 2 : 1;
  const int64_t seg = (k1 - k0) * esz, stride = cols * esz, start = (src.first * cols + k0) * esz;
  const int64_t rows = int64_t(t.row1) - t.row0;
  const int nseq = t.b1 - t.b0;
  const bool same_dt = src.m1 < 0 || dtype_of(src.m1) == dt;
  const bool aligned = seg % 16 == 0 && stride % 16 == 0 && stride < (int64_t(1) << 32) && start % 16 == 0 && start >= 0;
  if (!same_dt || !aligned || rows <= 0 || seg <= 0) return {};
  if (nseq == 1) {
    if (nmat * seg > int64_t(stage_bytes)) return {};
    return {uint32_t(std::min<int64_t>(int64_t(stage_bytes) / (nmat * seg), kMaxStageRows)), 0};
  }
  // TMA boxes of kMmBoxCols columns; the inputs are copied in 16-byte pieces
  // (their rows, cols elements, and k0 aligned to 8 elements).
  // (LmHead's logits leave the tile from its accumulators: at most kMmMaxTokens tokens.)
  const int max_seq = Opcode(t.opcode) == Opcode::LmHead ? kMmMaxTokens : mm_max_tokens(p.h);
  if (nseq > max_seq || dt != DType::BF16 || (k1 - k0) % kMmBoxCols != 0 || cols % 8 != 0 || k0 % 8 != 0 ||
      stage_bytes % kMmStageAlign != 0)
    return {};
  const int64_t cap = std::min<int64_t>(mm_max_rows(p.h.target.mm_engine, p.h.batch, int(nmat)), (rows + 15) / 16 * 16);
  for (int64_t kc = std::min<int64_t>(mm_stage_cols(p.h), k1 - k0) / kMmBoxCols * kMmBoxCols; kc >= kMmBoxCols;
       kc -= kMmBoxCols)
    if ((k1 - k0) % kc == 0 && (k1 - k0) / kc <= 255 && nmat * cap * kc * esz <= int64_t(stage_bytes))
      return {uint32_t(cap), uint32_t(kc)};
  return {};
}

void check_plan(const Program& p, const DTypeOf& given) {
  const TargetDesc& g = p.h.target;
  const std::string name = target_name(p.h);
  KEEL_CHECK(g.sms >= 1, "program: target '", name, "' has ", g.sms, " SMs");
  KEEL_CHECK(g.n_stages >= 0 && g.n_stages <= kMaxRingStages && (g.n_stages == 0) == (g.stage_bytes == 0) &&
                 g.stage_bytes % 16 == 0,
             "program: bad ring (", g.n_stages, " stages of ", g.stage_bytes, " bytes)");
  KEEL_CHECK(g.work_offset == uint64_t(g.n_stages) * g.stage_bytes && g.work_offset % kWorkAlign == 0,
             "program: the work area starts at byte ", g.work_offset, ", not after the ring (", g.n_stages, " x ",
             g.stage_bytes, ")");
  const uint32_t need = kernel_work_bytes(p.h);
  KEEL_CHECK(g.work_need == need && g.work_bytes >= need && g.work_bytes % kWorkAlign == 0,
             "program: work area of ", g.work_bytes, " bytes (need recorded ", g.work_need, "), the tasks need ", need);
  KEEL_CHECK(uint64_t(g.dynamic_smem) == uint64_t(g.work_offset) + g.work_bytes,
             "program: dynamic shared memory ", g.dynamic_smem, " is not the ring + the work area (",
             uint64_t(g.work_offset) + g.work_bytes, ")");
  KEEL_CHECK(uint64_t(g.static_smem) + g.dynamic_smem <= g.smem_per_block, "program: static ", g.static_smem,
             " + dynamic ", g.dynamic_smem, " bytes of shared memory exceed the target's ", g.smem_per_block);
  KEEL_CHECK(g.max_inflight >= 0 && g.max_inflight <= std::max(g.n_stages - 1, 0) && (g.loader_hold == 0 || g.loader_hold == 1),
             "program: bad loader policy (max in flight ", g.max_inflight, ", hold ", g.loader_hold, ")");
  KEEL_CHECK(g.mm_engine == kMmEngineMma || g.mm_engine == kMmEngineWgmma, "program: unknown matmul engine ",
             g.mm_engine, " (0: mma.sync, 1: wgmma)");
  KEEL_CHECK(g.mm_tokens == 0 || (g.mm_tokens % kMmBoxCols == 0 && g.mm_tokens >= kMmMaxTokens &&
                                    g.mm_tokens <= kMmWideMaxTokens && g.mm_engine == kMmEngineWgmma),
             "program: matmul tasks of ", g.mm_tokens, " tokens (0, or a multiple of 64 from ", kMmMaxTokens, " to ",
             kMmWideMaxTokens, ", on the wgmma engine)");
  KEEL_CHECK(g.mm_cols >= 0 && g.mm_cols <= kMmMaxCols && g.mm_cols % kMmBoxCols == 0, "program: matmul stage columns ",
             g.mm_cols, " (0, or a multiple of ", kMmBoxCols, " up to ", kMmMaxCols, ")");
  KEEL_CHECK(g.attn_seqs >= 0 && g.attn_seqs <= kAttnMaxSeqs && (g.attn_seqs & (g.attn_seqs - 1)) == 0 &&
                 (g.attn_seqs <= 1 || attn_group_serves(p.h)),
             "program: attention tasks of ", g.attn_seqs, " sequences (a power of two up to ", kAttnMaxSeqs,
             ", and more than one only with one attention chunk, no prefill lanes and head_dim 32 / 64 / 128, "
             "groups of up to 8 heads, pages of a multiple of 8 positions)");
  const DTypeOf declared = [&](int32_t id) { return DType(p.buffers[size_t(id)].dtype); };
  const DTypeOf& dtype_of = given ? given : declared;
  for (uint32_t i = 0; i < p.tasks.size(); ++i) {
    const StagePlan want = plan_stage(p, p.tasks[i], g.stage_bytes, dtype_of);
    const uint32_t have = stage_rows(p.tasks[i]), have_cols = stage_cols(p.tasks[i]);
    auto cols = [](uint32_t c) { return c ? cat(" of ", c, " columns") : std::string(); };
    KEEL_CHECK(have == want.rows && have_cols == want.cols, "program: ", describe_task(p, i), " streams ", have,
               " rows per ring stage", cols(have_cols), "; with ",
               given ? "the weights' stored dtypes" : "its declared weight dtypes", " and ", g.stage_bytes,
               "-byte stages it must be ", want.rows, cols(want.cols), " (recompile for these weights)");
  }
}

}  // namespace keel::program
