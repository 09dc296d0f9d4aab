// target_flags.h: --target and the tuning knobs.
#include "target_flags.h"

#include "core/error.h"
#include "program/smem_plan.h"
#if KEEL_EXEC_CUDA_AVAILABLE
#include "exec/cuda/device_info.h"
#include "exec/cuda/plan_check.h"
#endif

namespace keel::cli {

void add_target_flags(CLI::App& c, TargetFlags& f, const std::string& default_target) {
  f.target = default_target;
  c.add_option("--target", f.target, "Device to plan for: h100, h200, generic, or auto (this GPU)")
      ->check(CLI::IsMember({"h100", "h200", "generic", "auto"}))->capture_default_str();
  c.add_option("--stage-kib", f.stage_kib, "Weight ring stage in KiB (0: no ring; default: the target's, 64; batches of 9-16 with one attention chunk of a model whose O-projection gives a worker under two 64 KiB stages: 32)")
      ->check(CLI::Range(0, 1024));
  c.add_option("--max-stages", f.max_stages, "Most ring stages (0: as many as fit; default: the target's: as many as fit, batches 3, batches with one or two attention chunks a sequence and kv head 2, the 32 KiB stages above 4, batches over 16: 6)")
      ->check(CLI::Range(0, program::kMaxRingStages));
  c.add_option("--max-inflight", f.max_inflight, "Ring stages the loader keeps in flight (0: all; default: the target's, 1; batches: 0)")
      ->check(CLI::Range(0, program::kMaxRingStages));
  c.add_option("--loader-hold", f.loader_hold, "Loader holds around its CTA's releases: 1 on, 0 off (default: the target's, 1; batches: 0)")
      ->check(CLI::Range(0, 1));
  c.add_option("--l2-hint", f.l2_hint, "L2 evict-first hint on weight copies: 1 on, 0 off (default: the target's, 1)")
      ->check(CLI::Range(0, 1));
  c.add_option("--mm-engine", f.mm_engine,
               "Tensor-core instructions of batch and prefill matmul tiles: wgmma (Hopper) or mma (mma.sync) (default: the target's: wgmma over 16 tokens a step, mma up to 16)")
      ->check(CLI::IsMember({"wgmma", "mma"}));
  c.add_option("--mm-cols", f.mm_cols,
               "Programs of more than 16 tokens a step: most columns of a matmul tile's ring stage, a multiple of 64 up "
               "to 512 (default: the target's, 256; 0: 128)")
      ->check(CLI::Range(0, program::kMmMaxCols));
  c.add_option("--mm-tokens", f.mm_tokens,
               "Programs of more than 64 tokens a step (prefill chunks, batches) on the wgmma engine: most tokens of "
               "one matmul task, 64 (or 0) or the wide tiles' 128 (default: the target's)")
      ->check(CLI::IsMember({0, 64, 128}));
  c.add_option("--attn-seqs", f.attn_seqs,
               "Batches with one attention chunk a sequence and kv head: sequences of one attention task, 1, 2, 4 or "
               "8 (default: the target's, 0: the fewest that leave one round of tasks over the SMs)")
      ->check(CLI::IsMember({0, 1, 2, 4, 8}));
  c.add_option("--o-split-k", f.o_split_k, "o_proj k-slices (0: the target's, else one per kv-head group)")
      ->check(CLI::Range(0, 1 << 16));
  c.add_option("--down-split-k", f.down_split_k, "down_proj k-slices (0: the target's, else the compiler's)")
      ->check(CLI::Range(0, 1 << 16));
  c.add_option("--prefill-attn-rows", f.prefill_attn_rows,
               "Prefill Programs: most q rows (lanes x q heads a kv head, at least one lane) of one kv_append / "
               "prefill_attention task (0: 32; at most 32 in steps of up to 64 lanes, 64 in wider ones; default: the "
               "target's, on h100/h200 16 in steps of up to 64 lanes, 64 in wider ones)")
      ->check(CLI::Range(0, 4096));
  c.add_option("--attn-chunks", f.attn_chunks, "KV chunks per (sequence, kv head) (0: fill the workers)")
      ->check(CLI::Range(0, 1 << 16));
  c.add_option("--attn-min-chunk", f.attn_min_chunk,
               "Decode Programs of several sequences: fewest positions per attention chunk: [0, pos] split evenly over as many of the "
               "chunks as give each this many, the others idle (0: off, the chunks before the last split the "
               "history; -1: the compiler's: off)")
      ->check(CLI::Range(-1, 1 << 30));
  c.add_option("--row-align", f.row_align,
               "Matvec and matmul tasks cover a multiple of this many rows (0: the target's: 8; Programs of several "
               "sequences 64 on h100/h200); larger: fewer, longer tasks (each batch task pays its inputs and epilogue once)")
      ->check(CLI::Range(0, 1 << 16));
}

compiler::Target resolve_target(const TargetFlags& f, int device) {
  compiler::Target t;
  if (f.target == "auto") {
#if KEEL_EXEC_CUDA_AVAILABLE
    KEEL_CHECK(exec::cuda::have_gpu(), "--target auto: no usable CUDA GPU on this machine; name a preset (h100, h200)");
    t = exec::cuda::device_target(device);
#else
    (void)device;
    fail("--target auto: this keel was built without CUDA; name a preset (h100, h200, generic)");
#endif
  } else {
    t = compiler::target_preset(f.target);
  }
  if (f.stage_kib >= 0)
    t.stage_bytes = t.batch_small_stage_bytes = t.batch_wide_stage_bytes = uint32_t(f.stage_kib) * 1024u;
  if (f.max_stages >= 0)
    t.max_stages = t.batch_max_stages = t.batch_few_chunks_max_stages = t.batch_small_max_stages =
        t.batch_wide_max_stages = f.max_stages;
  // Given on the command line, a loader policy holds for one sequence and for batches.
  if (f.max_inflight >= 0) t.max_inflight = t.batch_max_inflight = f.max_inflight;
  if (f.loader_hold >= 0) t.loader_hold = t.batch_loader_hold = f.loader_hold;
  if (f.l2_hint >= 0) t.l2_evict_first = f.l2_hint != 0;
  if (!f.mm_engine.empty())
    t.mm_engine = t.batch_mm_engine = f.mm_engine == "mma" ? program::kMmEngineMma : program::kMmEngineWgmma;
  if (f.mm_cols >= 0) t.batch_wide_mm_cols = f.mm_cols;
  if (f.mm_tokens >= 0) t.batch_wide_mm_tokens = f.mm_tokens;
  if (f.attn_seqs >= 0) t.batch_attn_seqs = f.attn_seqs;
  if (f.prefill_attn_rows >= 0) t.prefill_attn_rows = t.prefill_attn_rows_wide = f.prefill_attn_rows;
  return t;
}

void apply_compile_flags(const TargetFlags& f, compiler::CompileOptions& o) {
  o.o_split_k = f.o_split_k;
  o.down_split_k = f.down_split_k;
  o.attn_chunks = f.attn_chunks;
  o.attn_min_chunk = f.attn_min_chunk;
  if (f.row_align > 0) o.row_align = f.row_align;
}

std::string compile_flags_of(const program::ProgramHeader& h) {
  const program::TargetDesc& t = h.target;
  const program::OptionsDesc& o = h.options;
  const std::string name = program::target_name(h);
  bool preset = false;
  for (const std::string& n : compiler::target_preset_names()) preset |= n == name;
  const DType dt = DType(o.weight_dtype);
  return cat("--target ", preset ? name : "auto", o.workers ? cat(" --workers ", o.workers) : std::string(), " --stage-kib ", t.n_stages > 0 ? t.stage_bytes / 1024 : 0,
             " --max-stages ", t.max_stages, " --max-inflight ", t.max_inflight, " --loader-hold ", t.loader_hold,
             " --l2-hint ", t.l2_evict_first, " --mm-engine ", t.mm_engine == program::kMmEngineMma ? "mma" : "wgmma",
             program::mm_tokens(h.batch) > 16 ? cat(" --mm-cols ", t.mm_cols) : std::string(),
             h.batch > program::kMmMaxTokens ? cat(" --mm-tokens ", t.mm_tokens) : std::string(),  // (0 too: the presets' is 128)
             h.batch > 1 ? cat(" --attn-seqs ", t.attn_seqs > 0 ? t.attn_seqs : 1) : std::string(), " --o-split-k ", o.o_split_k, " --down-split-k ", o.down_split_k,
             " --attn-chunks ", o.attn_chunks, " --attn-min-chunk ", h.opt_attn_min_chunk - 1,
             o.row_align != compiler::CompileOptions{}.row_align ? cat(" --row-align ", o.row_align) : std::string(),
             " --batch ", o.batch,
             h.seq_lanes > 1 ? cat(" --prefill-chunk ", h.seq_lanes) : std::string(),
             h.decode_lanes > 0 ? cat(" --decode-lanes ", h.decode_lanes) : std::string(),
             h.pages_per_seq <= 0 || h.n_pages == h.pages_per_seq * program::n_lane_sequences(h) ? std::string()
             : h.n_pages % h.pages_per_seq == 0 ? cat(" --kv-sequences ", h.n_pages / h.pages_per_seq)
                                                : cat(" --kv-pages ", h.n_pages),
             " --context ", o.max_context, " --dtype ",
             dt == DType::F32 ? "f32" : dt == DType::F16 ? "f16" : "bf16", " --bandwidth ", o.bandwidth_GBps);
}

}  // namespace keel::cli
