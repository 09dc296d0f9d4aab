// The flags that choose a Program's Target and tuning options, shared by
// `keel compile` and `keel bench` so both can name the same Program: --target
// (a preset, or auto = this GPU), the ring / loader knobs that override the
// target's fields, and the split-K / chunk compile options. Every knob ends up
// in the Program (ProgramHeader::target / options), whose hash both print.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "compiler/compiler.h"
#include "program/program.h"

namespace keel::cli {

struct TargetFlags {
  std::string target;  // preset name or "auto"
  int stage_kib = -1, max_stages = -1, max_inflight = -1, loader_hold = -1, l2_hint = -1;  // -1: the target's
  std::string mm_engine;  // "wgmma" or "mma"; empty: the target's
  int mm_cols = -1;       // Target::batch_wide_mm_cols (-1: the target's)
  int mm_tokens = -1;     // Target::batch_wide_mm_tokens (-1: the target's)
  int attn_seqs = -1;     // Target::batch_attn_seqs (-1: the target's)
  int prefill_attn_rows = -1;  // Target::prefill_attn_rows (-1: the target's)
  int o_split_k = 0, down_split_k = 0, attn_chunks = 0;  // 0: the target's, else the compiler's
  int attn_min_chunk = -1;  // CompileOptions::attn_min_chunk (-1: the compiler's)
  int row_align = 0;        // CompileOptions::row_align (0: the target's)
};

void add_target_flags(CLI::App& cmd, TargetFlags& f, const std::string& default_target);

/// The target the flags name, with their overrides; "auto" asks GPU `device`
/// (an error naming the presets in a build without CUDA or without a GPU).
compiler::Target resolve_target(const TargetFlags& f, int device = 0);

/// Copies the split-K / chunk / row alignment flags into `o`.
void apply_compile_flags(const TargetFlags& f, compiler::CompileOptions& o);

/// The `keel compile` flags that rebuild the Program with this header (target,
/// every knob, context, batch, dtype, splits, cost model), e.g. for bench output.
std::string compile_flags_of(const program::ProgramHeader& h);

}  // namespace keel::cli
