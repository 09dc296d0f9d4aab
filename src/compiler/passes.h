// The compiler passes between the fused graph and the finished Program, in the
// order compile() runs them. They share one Build record (the Program under
// construction plus per-pass bookkeeping) so each pass can be run and tested on
// its own: a test builds a Build with begin_build(), runs the passes it needs
// and inspects the result.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "compiler/compiler.h"
#include "program/program.h"
#include "graph/graph.h"

namespace keel::compiler {

struct Build {
  CompileOptions opt;
  graph::Graph fused;                               // output of fuse()
  Program p;                                        // the Program being built
  std::unordered_map<std::string, int32_t> buf_id;  // buffer name -> id
  std::vector<int32_t> task_worker;                 // partition: worker of each task
  std::vector<double> load_us;                      // partition: predicted µs per worker
  double bytes_per_us_per_worker = 0;               // cost model: bandwidth / W
  uint32_t n_arrival_groups = 0;                    // partition: attention (layer, sequence, kv head) groups

  int32_t id(const std::string& name) const;        // throws naming the buffer
  int32_t id_or_none(const std::string& name) const;  // -1 when absent or ""
};

/// Validates the options against the model, fuses the graph and fills the
/// header's model and launch fields.
Build begin_build(const graph::Graph& g, const CompileOptions& opt);

/// Buffers pass (1/2): declares every buffer — weights by tensor name, the state
/// buffers (x, state, control, tokens, ring, page_table, logits, argmax), the
/// per-layer activations (qkv, attn_part, attn, h), the paged KV caches and the
/// RoPE constant. Sizes only; offsets come from allocate_arenas.
void plan_buffers(Build& b);

/// Partition pass: splits every fused operator into tasks and assigns each to
/// a worker. Matvec tiles are sized by water-filling the cost model (bytes
/// streamed / per-worker bandwidth + a fixed per-task overhead) so every worker
/// ends each operator with near-equal predicted time (QKV rows too: tiles of
/// the raw [q; k; v] rows that never straddle a part); o_proj and down_proj are
/// split-K; attention is split-KV into chunks per (sequence, kv head), the one
/// at pos appending k and v, the last to finish merging; the LM head is tiled
/// with a partial argmax per tile; one Step task per sequence.
void partition(Build& b);

/// Buffers pass (2/2): lays out the workspace arena (state buffers first, then
/// activations first-fit by lifetime so buffers that are never live together
/// share bytes), the KV arena and the constants.
void allocate_arenas(Build& b);

/// Dependencies pass: replays two steps of the task list over interval maps of
/// each address space (task_accesses), derives RAW / WAR / WAW producers of
/// every task, drops waits the step gate or other waits already imply, and
/// turns each distinct producer set into one counter. Then one arrival counter
/// per attention group (the Attention tasks' arg 3), after those.
void build_dependencies(Build& b);

/// Placement pass: writes the per-worker ordered lists (increasing task index =
/// the global topological order) and checks that every wait refers only to
/// earlier tasks of the same step, so the lowest unfinished task can always run.
void place(Build& b);

/// Part of place(): drops same-step waits already implied by worker order and
/// the task's other waits (vector clocks over one step). Runs when
/// opt.prune_transitive is set.
void prune_worker_order(Build& b);

}  // namespace keel::compiler
