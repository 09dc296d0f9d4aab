// CudaBackend (see cuda_backend.h): compile for the device, then one
// megakernel launch per request.
#include "exec/cuda/cuda_backend.h"

#include <cstdio>

#include "compiler/compiler.h"
#include "core/error.h"
#include "exec/cpu/cpu_backend.h"
#include "exec/cuda/device_info.h"
#include "exec/cuda/plan_check.h"

namespace keel::exec::cuda {

CudaBackend::CudaBackend(const model::Model& m, const CudaBackendOptions& opt) {
  const auto gpus = list_gpus();
  KEEL_CHECK(opt.device >= 0 && size_t(opt.device) < gpus.size(), "cuda backend: no CUDA device ", opt.device,
             " (", gpus.size(), " found)");
  model::ModelConfig cfg = m.config;
  cfg.dtype = m.weight_dtype;  // plan the tiles for the stored weights (config.json may declare another dtype)
  compiler::CompileOptions co;
  co.target = opt.target ? *opt.target : device_target(opt.device);
  co.batch = 1;
  co.max_context = int(opt.max_context);
  program::Program p = compiler::compile(cfg, co);
  const std::string why = target_mismatch(p, device_facts(opt.device));
  if (!why.empty()) {
    // Same options, this device's target (and its SM count as workers).
    compiler::CompileOptions again = compiler::options_of(p);
    again.target = device_target(opt.device);
    again.workers = 0;
    std::fprintf(stderr, "cuda backend: %s; recompiling with the same options for target %s\n", why.c_str(),
                 again.target.name.c_str());
    p = compiler::compile(cfg, again);
    recompiled_ = true;
  }
  ProgramExecutorOptions eo;
  eo.device = opt.device;
  eo.watchdog_s = opt.watchdog_s;
  exec_ = std::make_unique<ProgramExecutor>(p, m, eo);
}

CudaBackend::~CudaBackend() = default;

int64_t CudaBackend::max_context() const { return exec_->program().h.max_context; }

engine::GenerateResult CudaBackend::generate(const engine::GenerateRequest& req,
                                             const engine::TokenCallback& on_token) {
  const cpu::Sequence s = cpu::sequence_for(req, max_context(), "cuda backend");
  bool stopped = false;
  return cpu::result_of(exec_->run({s}, cpu::run_options_for(req, on_token, &stopped)), stopped);
}

std::vector<float> CudaBackend::score(std::span<const int32_t> ids) {
  KEEL_CHECK(!ids.empty(), "cuda backend: score needs at least one token");
  KEEL_CHECK(int64_t(ids.size()) <= max_context(), "cuda backend: ", ids.size(), " tokens exceed the context of ",
             max_context());
  cpu::Sequence s;
  s.prompt.assign(ids.begin(), ids.end());
  s.max_new = 1;
  cpu::RunOptions ro;
  ro.capture_logits = true;
  cpu::RunResult r = exec_->run({s}, ro);
  const size_t V = size_t(exec_->program().h.vocab);
  KEEL_CHECK(r.seqs[0].logits.size() == ids.size() * V, "cuda backend: captured ", r.seqs[0].logits.size() / V,
             " logit rows for ", ids.size(), " tokens");
  return std::move(r.seqs[0].logits);
}

}  // namespace keel::exec::cuda
