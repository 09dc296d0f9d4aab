// CpuBackend: the engine::Backend that compiles the model for B = 1 and runs
// it on the CPU executor — `keel generate --backend cpu [--workers N]
// [--shuffle SEED]`. Prefill and decode both run as Program steps.
#pragma once

#include <memory>

#include "compiler/compiler.h"
#include "engine/backend.h"
#include "exec/cpu/executor.h"
#include "model/model.h"

namespace keel::exec::cpu {

struct CpuBackendOptions {
  int workers = 8;            // logical workers in the compiled Program
  int threads = 0;            // host threads; 0: all
  int64_t max_context = 0;    // 0: min(model max, 4096)
  bool shuffle = false;
  uint64_t shuffle_seed = 0;
};

/// Request checks and mapping shared by the backends that run a Program (cpu,
/// cuda): `who` names the backend in errors.
Sequence sequence_for(const engine::GenerateRequest& req, int64_t max_context, const char* who);
/// eos ids and the token callback of a request; *stopped turns true when the
/// callback asks to stop (it must outlive the run).
RunOptions run_options_for(const engine::GenerateRequest& req, const engine::TokenCallback& on_token, bool* stopped);
/// The engine's view of sequence 0 of a run; `stopped`: the callback asked to stop.
engine::GenerateResult result_of(const RunResult& r, bool stopped);

class CpuBackend : public engine::Backend {
 public:
  /// Compiles `m` (B = 1) and binds the executor; `m` must outlive the backend.
  CpuBackend(const model::Model& m, const CpuBackendOptions& opt);
  std::string_view name() const override { return "cpu"; }
  int64_t max_context() const override { return program_.h.max_context; }
  engine::GenerateResult generate(const engine::GenerateRequest& req, const engine::TokenCallback& on_token) override;
  std::vector<float> score(std::span<const int32_t> ids) override;
  const program::Program& program() const { return program_; }

 private:
  const model::Model& model_;
  CpuBackendOptions opt_;
  program::Program program_;
  std::unique_ptr<CpuExecutor> exec_;
};

}  // namespace keel::exec::cpu
