// The graph IR: one decode step of B sequences as a list of operators on named
// tensors. build_decode_graph() writes it per architecture from a ModelConfig
// with primitive operators (rmsnorm, matvec, bias, rope, ...); fuse() (in
// compiler/fuse.h) rewrites it into the fused operators the task set offers.
// Those fused kinds belong to the compiler (compiler/fuse.h): the graph only
// reserves their range of OpKind values.
// Tensors are named like the checkpoint (weights) or by role and layer
// ("q.3", "k_cache.3"), so the Program's buffer table can be read by a person.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "model/config.h"

namespace keel::graph {

enum class TensorKind : uint8_t { Weight, Activation, State, Kv };

/// A named tensor. Activations are [batch, cols]; weights [rows, cols] (a
/// vector weight has rows == 1); KV caches are described by the Program.
struct Tensor {
  std::string name;
  TensorKind kind = TensorKind::Activation;
  DType dtype = DType::BF16;
  int64_t rows = 0, cols = 0;
  int layer = -1;
};

enum class OpKind : uint8_t {
  // primitive operators (build_decode_graph)
  RmsNorm,      // out = bf16(rmsnorm(in) * w)
  Matvec,       // out = W . in (fp32)
  AddBias,      // out += bias
  HeadRmsNorm,  // per head: out = rmsnorm(head) * w
  Rope,         // rotary embedding at each sequence's position
  KvAppend,     // k, v -> cache slot at position
  Attention,    // causal attention of q over the cache (GQA); after fuse it also
                // applies the q and k epilogues (head norm, rope) to the raw rows
                // and appends k and v (its outputs then include the caches)
  SiluMul,      // out = bf16(silu(a) * b)
  Add,          // residual: x += in
  Step,         // token selection, output, next embedding into x
};
/// OpKind values from here on are operators the compiler's passes create
/// (compiler/fuse.h); the builder never writes them.
inline constexpr uint8_t kFirstCompilerOpKind = 64;
/// The name of a primitive kind ("rmsnorm", ...); "compiler op" for the
/// compiler's kinds (compiler::kind_name names those).
std::string_view op_kind_name(OpKind k);

/// One operator. Weights are named by role ("W", "norm", "bias", "q_norm", ...).
struct Op {
  OpKind kind = OpKind::Matvec;
  std::string name;                 // e.g. "q_proj", "o_proj", "gate_up"
  int layer = -1;
  std::vector<std::string> inputs;  // activation / state / kv tensors read
  std::vector<std::string> outputs; // activation / state / kv tensors written
  std::vector<std::pair<std::string, std::string>> weights;  // role -> weight tensor

  /// The weight tensor with `role`, or "" when absent.
  std::string weight(std::string_view role) const;
};

struct Graph {
  model::ModelConfig config;
  int batch = 1;
  std::vector<Tensor> tensors;
  std::vector<Op> ops;  // in execution order

  /// Adds a tensor (names are unique; re-adding the same name is an error).
  void add_tensor(Tensor t);
  const Tensor& tensor(const std::string& name) const;  // throws naming the tensor
  bool has_tensor(const std::string& name) const;
  /// Checks every op's tensors exist and every activation is written before it
  /// is read within the step; throws keel::Error naming the op and tensor.
  void validate() const;
  /// A readable listing, one op per line.
  std::string dump() const;

 private:
  std::unordered_map<std::string, size_t> index_;
};

/// Checkpoint tensor name of a per-layer weight, e.g. ("self_attn.q_proj.weight", 3).
std::string layer_weight(int layer, std::string_view suffix);

/// Builds one decode step for `batch` sequences: embeddings arrive in x, every
/// layer runs, the final norm and LM head produce logits and a Step picks the
/// next token. Differences per family: qkv biases (qwen2, llama attention_bias),
/// o_proj bias, mlp biases, q/k norm (qwen3), tied LM head.
Graph build_decode_graph(const model::ModelConfig& cfg, int batch);

}  // namespace keel::graph
