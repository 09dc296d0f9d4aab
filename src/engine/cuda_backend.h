// CudaBackend: the engine::Backend over the CUDA ProgramExecutor, for
// `keel generate --backend cuda`, `keel chat` and `keel score`. The model is
// compiled into a Program (batch 1 or --batch, weights in their stored dtype) for the
// given target or the device's own; a Program whose target does not fit the
// device is recompiled with the same options for it, said on stderr. generate() runs
// prefill and decode in one persistent megakernel launch and streams tokens to
// the callback as the kernel publishes them. Sampling (temperature, top-k,
// top-p, min-p, repetition penalty) runs on the device with the same random
// draws as the CPU executor. Built only with CUDA (keel_engine_backends adds it
// when keel_exec_cuda exists).
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "compiler/target.h"
#include "engine/backend.h"
#include "engine/kv_pages.h"
#include "engine/program_backend.h"
#include "exec/cuda/program_executor.h"
#include "program/program.h"
#include "model/model.h"

namespace keel::engine {

struct CudaBackendOptions {
  int64_t max_context = 0;  // 0: the model's max_position_embeddings (frontends bound it: engine/context.h)
  int device = 0;
  double watchdog_s = 5.0;
  /// The target to compile for; unset: the device's (exec::cuda::device_target).
  std::optional<compiler::Target> target;
  int batch = 1;  // sequences per launch (the compiled Program's batch)
  /// Prompt positions per prefill step: prompts of more than
  /// exec::kMinPrefillPositions tokens run through a prefill Program of this
  /// many lanes first (exec/common/prefill.h); 0 or 1: prompts decode one
  /// position a step. The default, 256: four lane groups of the matmul
  /// engine's widest tile (program::kMmMaxTokens tokens), whose tasks on the
  /// same weight rows run side by side. H100, 2000-token prompt (2026-12-07):
  /// Qwen3-8B 359.5 ms at 64, 226.2 at 256, 217.4 at 512 (254.8 at 384),
  /// Llama-3.2-1B 88.4 / 49.0 / 51.0. A prompt shorter than the chunk still
  /// pays a step of 256 lanes.
  int prefill_chunk = kDefaultPrefillChunk;
  static constexpr int kDefaultPrefillChunk = 256;
  static constexpr int kMixedStepLanes = 64;
  /// With a prefill Program and batch > 1: prompt positions per step when a
  /// prompt is prefilled beside sequences that decode (a mixed Program of
  /// `batch` decode lanes and this many prefill lanes: engine/paged_launch.h);
  /// -1: compiler::mixed_prefill_lanes(batch, min(prefill_chunk,
  /// kMixedStepLanes)), so the decoding sequences' steps stay as short as
  /// before the wider prefill default; 0: none (the others wait for the
  /// prefill).
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

class CudaBackend : public ProgramBackend {
 public:
  /// Compiles and uploads `m`; throws keel::Error when there is no usable GPU
  /// or not enough GPU memory. `m` must outlive the backend.
  CudaBackend(const model::Model& m, const CudaBackendOptions& opt = {});
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  int64_t max_context() const override;
  /// Up to max_batch() requests per launch (generate_batch): one megakernel
  /// streams each weight tile once per step for all of them (matmul tiles on
  /// tensor cores). score() captures the logits on the device.
  int max_batch() const override;

  /// The decode Program's executor. A run on it directly writes KV pages the
  /// prefix cache holds: call forget_cached_prefixes() after one.
  exec::cuda::ProgramExecutor& executor() { return *exec_; }
  void forget_cached_prefixes() { pages_->clear(); }
  /// The prefill Program's executor (sharing the weights), or null.
  exec::cuda::ProgramExecutor* prefill_executor() { return prefill_.get(); }
  /// The mixed Program's executor (decode lanes beside a prefill group), or null.
  exec::cuda::ProgramExecutor* mixed_executor() { return mixed_.get(); }
  /// The batches of the smaller decode Programs (CudaBackendOptions::small_batches), ascending.
  std::vector<int> small_batches() const;
  std::vector<DecodeProgram> decode_programs() const override;
  /// True when the Program compiled for opt.target did not fit the device and
  /// was recompiled for it (same options).
  bool recompiled() const { return recompiled_; }

 private:
  std::unique_ptr<exec::cuda::ProgramExecutor> exec_;
  std::unique_ptr<exec::cuda::ProgramExecutor> prefill_;  // declared after exec_: destroyed before it
  std::unique_ptr<exec::cuda::ProgramExecutor> mixed_;
  std::vector<std::unique_ptr<exec::cuda::ProgramExecutor>> small_;  // CudaBackendOptions::small_batches
  std::vector<exec::cuda::ProgramExecutor*> small_ptrs_;             // small_, by batch ascending (run_paged)
  bool recompiled_ = false;
  exec::RunResult run(std::vector<exec::Sequence>& seqs, const exec::RunOptions& ro) override;
  int64_t vocab() const override;
};

}  // namespace keel::engine
