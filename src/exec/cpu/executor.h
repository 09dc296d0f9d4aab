// The CPU executor: runs a Program exactly as the GPU does — W logical workers,
// each walking its task list step after step, waiting on and signalling
// monotonic counters (std::atomic, acquire/release), with the step gate between
// steps — multiplexed on a few threads. Any ready worker may run next; in
// shuffle mode the choice is random (seeded) and threads yield at random, so a
// missing dependency shows up as a wrong answer. It is the oracle for the CUDA
// executor and the engine behind `keel generate --backend cpu`. Its run
// contract (Sequence, RunOptions, RunResult) is exec/common/run.h, shared with
// the CUDA executor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "exec/common/run.h"
#include "exec/cpu/tasks.h"
#include "program/program.h"
#include "model/model.h"

namespace keel::exec::cpu {

class CpuExecutor {
 public:
  /// Binds the Program's weight buffers to the model's tensors by name (shape
  /// and count checked) and allocates the workspace and KV arenas; with
  /// `kv_of`, uses that executor's KV cache instead (the Programs' KV buffers
  /// must match, as for the CUDA executor's share_kv; `kv_of` must outlive
  /// this one and their runs must not overlap).
  CpuExecutor(const program::Program& p, const model::Model& m, CpuExecutor* kv_of = nullptr);
  /// Whether this executor and `other` use one KV cache.
  bool shares_kv_with(const CpuExecutor& other) const { return kv_arena_ == other.kv_arena_; }
  ~CpuExecutor();
  CpuExecutor(const CpuExecutor&) = delete;
  CpuExecutor& operator=(const CpuExecutor&) = delete;

  /// Runs up to B sequences (the Program's batch) to completion.
  RunResult run(const std::vector<Sequence>& seqs, const RunOptions& opt);

  const program::Program& program() const { return p_; }
  /// Copies positions [0, positions) of sequence `from`'s K/V cache into
  /// sequence `to` of `dst`'s (exec::kv_sequence_copies), e.g. a prefill run's
  /// cache into the decode executor's before a run with Sequence::kv_filled.
  void copy_kv_to(CpuExecutor& dst, int to, int from, int64_t positions) const;
  /// Copies whole KV pages within this executor's cache (every layer's K and
  /// V): page `to` gets page `from`'s content, for each pair in order.
  void copy_kv_pages(const std::vector<std::pair<int32_t, int32_t>>& from_to);
  /// The bytes of buffer `id` (workspace, KV, constant or bound weight).
  const uint8_t* buffer_data(int32_t id) const { return ctx_.ptr.at(size_t(id)); }

 private:
  struct Impl;
  const program::Program& p_;
  std::vector<uint64_t> workspace_, kv_;  // 8-byte aligned arenas
  uint8_t* kv_arena_ = nullptr;           // kv_, or the KV arena of the executor it shares
  TaskContext ctx_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::exec::cpu
