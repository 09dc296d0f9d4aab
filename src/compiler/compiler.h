// The megakernel compiler's public API: ModelConfig (or a graph) + options ->
// Program. The pipeline, each pass in its own file and unit-tested alone:
//   graph::build_decode_graph  (graph/graph.h)   one decode step, primitive ops
//   fuse                       (fuse.h)          ops -> fused task families
//   plan_buffers               (buffers.h)       buffer table, KV pages, RoPE constants
//   partition                  (partition.h)     tiles sized by the cost model, per worker
//   build_dependencies         (deps.h)          read/write ranges -> counters, waits, signals
//   place                      (placement.h)     per-worker ordered lists, arena offsets
// and the tools around it: report / to_json / to_dot (report.h) and the
// symbolic checker (checker.h).
#pragma once

#include <cstdint>
#include <string>

#include "compiler/target.h"
#include "program/program.h"
#include "graph/graph.h"
#include "model/config.h"

namespace keel::compiler {

// The compiler builds Programs: their types are used unqualified in its passes.
using program::Access;
using program::AccessMode;
using program::BufferDesc;
using program::BufferKind;
using program::Control;
using program::Opcode;
using program::OpDesc;
using program::Program;
using program::ProgramHeader;
using program::SeqState;
using program::TaskDesc;
using program::WaitDesc;

struct CompileOptions {
  /// The device the Program is planned for (target.h): SMs, shared memory,
  /// ring, loader policy, split-K choices. Default: the "generic" target.
  Target target;
  int workers = 0;             // W: persistent workers; 0: the target's SM count (tests run fewer)
  int batch = 1;               // B: sequences decoded together
  /// T >= 2: a prefill Program (ProgramHeader::seq_lanes): T lanes of one
  /// sequence, each step T prompt positions, no LM head, at least 2 attention
  /// chunks; batch must be 1 or T (compile() makes it T). 0 or 1: a decode Program.
  int prefill_chunk = 0;
  /// D >= 1 with prefill_chunk T >= 2: a mixed Program
  /// (ProgramHeader::decode_lanes): D decode lanes (LM head, sampling) and
  /// one prefill group of T lanes, so a step decodes up to D sequences and
  /// prefills T positions of another; batch must be 1 or D + T (compile()
  /// makes it D + T).
  int decode_lanes = 0;
  /// Sequences the KV cache holds (pages_per_seq pages each); 0: one per
  /// sequence of the batch (batch / lanes). A prefill Program compiled with
  /// its decode Program's batch has the same KV buffers, so the two executors
  /// can share one cache (Sequence::kv_slot picks the pages).
  int kv_sequences = 0;
  /// KV pages in all, handed to sequences by an allocator (engine/kv_pages.h;
  /// the run names each sequence's pages: exec::Sequence::pages), at least one
  /// sequence's pages_per_seq; 0: pages_per_seq x kv_sequences. Sequences of
  /// different lengths then share one arena smaller than batch x max_context.
  int kv_pages = 0;
  int max_context = 0;         // tokens per sequence (prompt + generated); 0: the model's max_position_embeddings
  int page_size = 64;          // KV cache page, in tokens
  int ring_len = 0;            // output ring entries per sequence; 0: max_context
  int row_align = 0;           // matvec tiles cover a multiple of this many rows (0: the target's: 8; batches 64 on h100/h200)
  int o_split_k = 0;           // o_proj k-slices; 0: the target's, else one per kv-head group
  int down_split_k = 0;        // down_proj k-slices; 0: the target's, else 4 when I >= 4096, else 1
  int attn_chunks = 0;         // KV chunks per (sequence, kv head); 0: auto (fill W)
  /// Decode Programs: the minimum positions per attention chunk
  /// (program::attn_even_range: [0, pos] split evenly over as many of the C
  /// chunks as give each this many; at a short position the appending chunk
  /// does it all). 0: off (attn_chunk_range: C - 1 chunks split the history,
  /// the last appends). -1: the compiler's choice, off (measured no faster:
  /// compiler.cpp). Prefill, mixed and batch-1 Programs never have one (a
  /// given value is ignored there).
  int attn_min_chunk = -1;
  double bandwidth_GBps = 3350;    // cost model: device memory bandwidth (H100 SXM)
  double task_overhead_us = 1.0;   // cost model: fixed cost per task (wait, launch, epilogue)
  int predict_context = 1024;      // cost model: KV length assumed for attention tasks
  double attn_task_us = 5.0;       // cost model: an attention chunk's fixed time (q epilogue, partial merge)
  double kv_append_us = 2.0;       // cost model: the appending chunk's extra time (k epilogue, two cache rows)
  bool prune_transitive = true;    // drop waits implied by other waits (full-operator knowledge)
};

/// Compiles one decode step of `cfg` into a Program. Throws keel::Error for bad
/// options (naming the option) or an unsupported configuration.
Program compile(const model::ModelConfig& cfg, const CompileOptions& opt);

/// Same, from an already built (unfused) graph.
Program compile_graph(const graph::Graph& g, const CompileOptions& opt);

/// The options a Program was compiled with (its header's record) and its
/// target: compile(cfg, options_of(p)) gives p again, and a recompile for
/// another device changes only `target` (and leaves workers to it).
CompileOptions options_of(const Program& p);

/// Device-plan pass (target.cpp): resolves the target into the header's
/// TargetDesc (ring stages, work area, loader policy) and records every task's
/// rows per ring stage (program::stage_rows) for the declared weight dtypes.
/// Throws when the tasks' shared memory does not fit the target.
void plan_target(Program& p, const Target& t);

/// Prefill lanes of the mixed Program (CompileOptions::decode_lanes) beside
/// `decode_lanes` decode lanes, for a backend whose prefill Program has
/// `prefill_chunk` lanes: `prefill_chunk` - `decode_lanes`, so a mixed step
/// has the lanes of a prefill step and costs about as much. 0 (no
/// mixed Program: a joining prompt's prefill makes the others wait) when that
/// is below a quarter of prefill_chunk (so few positions a step that the
/// prompt would wait far longer for its first token), or below 2, or when
/// decode_lanes < 2 (a launch of one sequence has nothing to decode beside a
/// prefill).
int mixed_prefill_lanes(int decode_lanes, int prefill_chunk);

/// Bytes of weights each worker streams per step (index = worker).
std::vector<uint64_t> bytes_per_worker(const Program& p);

}  // namespace keel::compiler
