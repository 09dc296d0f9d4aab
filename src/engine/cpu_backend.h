// CpuBackend: the engine::Backend that compiles the model for a batch (default 1) and runs
// it on the CPU executor — `keel generate --backend cpu [--workers N]
// [--shuffle SEED]`. Prefill and decode both run as Program steps.
#pragma once

#include <memory>
#include <vector>

#include "engine/backend.h"
#include "engine/kv_pages.h"
#include "engine/program_backend.h"
#include "exec/cpu/executor.h"
#include "model/model.h"
#include "program/program.h"

namespace keel::engine {

struct CpuBackendOptions {
  int workers = 8;            // logical workers in the compiled Program
  int threads = 0;            // host threads; 0: all
  int64_t max_context = 0;    // 0: the model's max_position_embeddings
  bool shuffle = false;
  uint64_t shuffle_seed = 0;
  int batch = 1;              // sequences per launch (the compiled Program's batch)
  /// > 1: prompts of more than exec::kMinPrefillPositions tokens run through a
  /// prefill Program of this many lanes first (exec/common/prefill.h); 0 or
  /// 1: prompts decode one position a step. The default suits short and
  /// long prompts alike (SmolLM2-135M, 2-core x86-64, docs/log/results.md):
  /// 40 / 120 / 400 prompt tokens in 0.32 / 0.82 / 2.85 s at 16 lanes, 0.38 /
  /// 0.78 / 2.83 at 32, 0.40 / 0.77 / 3.0 at 64, 0.55 / 1.55 / 5.8 one a step
  /// (a step's lanes read each weight row once; a shorter chunk computes
  /// fewer idle lanes in a prompt's last step).
  int prefill_chunk = kDefaultPrefillChunk;
  static constexpr int kDefaultPrefillChunk = 16;
  /// With a prefill Program and batch > 1: prompt positions per step when a
  /// prompt is prefilled beside sequences that decode (a mixed Program of
  /// `batch` decode lanes and this many prefill lanes: engine/paged_launch.h);
  /// -1: compiler::mixed_prefill_lanes(batch, prefill_chunk); 0: none (the
  /// others wait for the prefill).
  int mixed_prefill = -1;
  /// Prompt positions an earlier call left in the KV cache are not computed
  /// again (engine/kv_pages.h).
  bool prefix_reuse = true;
  /// With batch > 1: decode Programs of 1, 2, 4, ... sequences beside the
  /// batch's (smaller_batches; the same weights and KV cache), so a launch of
  /// fewer sequences decodes on the smallest that holds them (a lone request
  /// at the speed of batch 1); false: every launch on the batch's Program.
  bool small_batches = true;
  /// KV cache capacity in tokens shared by a launch's sequences (rounded up to
  /// pages); 0: max_context x batch.
  int64_t kv_tokens = 0;
};

class CpuBackend : public ProgramBackend {
 public:
  /// Compiles `m` (B = 1) and binds the executor; `m` must outlive the backend.
  CpuBackend(const model::Model& m, const CpuBackendOptions& opt);
  std::string_view name() const override { return "cpu"; }
  int64_t max_context() const override { return program_.h.max_context; }
  int max_batch() const override { return program_.h.batch; }
  const program::Program& program() const { return program_; }
  /// The mixed Program (decode lanes beside a prefill group), when there is one.
  const program::Program* mixed_program() const { return mixed_ ? &mixed_program_ : nullptr; }
  /// The batches of the smaller decode Programs (CpuBackendOptions::small_batches), ascending.
  std::vector<int> small_batches() const;
  std::vector<DecodeProgram> decode_programs() const override;

 private:
  exec::RunResult run(std::vector<exec::Sequence>& seqs, const exec::RunOptions& ro) override;
  int64_t vocab() const override { return program_.h.vocab; }
  const model::Model& model_;
  CpuBackendOptions opt_;
  program::Program program_, prefill_program_, mixed_program_;
  std::unique_ptr<exec::cpu::CpuExecutor> exec_, prefill_, mixed_;
  std::vector<std::unique_ptr<program::Program>> small_programs_;  // CpuBackendOptions::small_batches
  std::vector<std::unique_ptr<exec::cpu::CpuExecutor>> small_;
  std::vector<exec::cpu::CpuExecutor*> small_ptrs_;  // small_, by batch ascending (run_paged)
};

}  // namespace keel::engine
