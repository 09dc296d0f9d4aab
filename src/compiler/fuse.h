// The fuse pass: rewrites a graph of primitive operators into the fused operator
// families the task set implements, so a decode layer needs few dependency waits:
//   rmsnorm + q/k/v matvec (+bias)                 -> fused_qkv (raw rows qkv.<layer>)
//   q and k head norm + rope + kv_append + attention -> attention (reads qkv.<layer>,
//                                                     appends to the KV caches)
//   rmsnorm + gate/up matvec (+bias) + silu_mul    -> fused_gate_up
//   matvec (+bias) + residual add                  -> matvec_residual
//   final rmsnorm + lm_head matvec                 -> fused_lm_head
//   step                                           -> unchanged
// With a batch of several sequences each rmsnorm stays an operator of its own
// (rms_norm tasks write the bf16 normed rows) and the fused matvecs read them.
// Splitting the q/k epilogues off the projection lets its rows be tiled freely
// (the epilogues need whole heads; the projection does not).
// Anything else is an error naming the operator, so an unsupported graph never
// compiles into a wrong Program.
#pragma once

#include "graph/graph.h"

namespace keel::compiler {

/// The fused operator kinds: the compiler's, in the range graph.h reserves
/// for it; only fuse() writes them, and partition turns each into tasks.
inline constexpr graph::OpKind kFusedQkv = graph::OpKind(graph::kFirstCompilerOpKind + 0);  // rmsnorm + q/k/v matvec (+bias) -> raw [q; k; v] rows (bf16)
inline constexpr graph::OpKind kFusedGateUp = graph::OpKind(graph::kFirstCompilerOpKind + 1);  // rmsnorm + gate/up matvec (+bias) + silu*mul
inline constexpr graph::OpKind kMatvecResidual = graph::OpKind(graph::kFirstCompilerOpKind + 2);  // x += W . in (+bias)
inline constexpr graph::OpKind kFusedLmHead = graph::OpKind(graph::kFirstCompilerOpKind + 3);  // final rmsnorm + LM head matvec + partial argmax

/// The name of any op kind: the fused ones ("fused_qkv", ...) and the
/// primitives (graph::op_kind_name).
std::string_view kind_name(graph::OpKind k);

/// Returns the fused graph (the same tensors plus qkv.<layer>; intermediate
/// tensors that fusion removed are no longer read or written by any op).
graph::Graph fuse(const graph::Graph& g);

}  // namespace keel::compiler
