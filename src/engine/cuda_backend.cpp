// CudaBackend (see cuda_backend.h): compile for the device, then one
// megakernel launch per request.
#include "engine/cuda_backend.h"

#include "compiler/compiler.h"
#include "core/error.h"
#include "engine/program_backend.h"
#include "exec/cuda/device_info.h"

namespace keel::engine {

using exec::cuda::ProgramExecutor;
using exec::cuda::ProgramExecutorOptions;

CudaBackend::CudaBackend(const model::Model& m, const CudaBackendOptions& opt) {
  compiler::CompileOptions co;
  co.batch = 1;
  co.max_context = int(opt.max_context);
  const auto gpus = exec::cuda::list_gpus();
  KEEL_CHECK(opt.device >= 0 && size_t(opt.device) < gpus.size(), "cuda backend: no CUDA device ", opt.device,
             " (", gpus.size(), " found)");
  co.workers = gpus[size_t(opt.device)].sm_count;  // one worker per SM
  exec::cuda::tune_for_gpu(co);
  ProgramExecutorOptions eo;
  eo.device = opt.device;
  eo.watchdog_s = opt.watchdog_s;
  const program::Program p = compiler::compile(m.config, co);
  exec_ = std::make_unique<ProgramExecutor>(p, m, eo);
}

CudaBackend::~CudaBackend() = default;

int64_t CudaBackend::max_context() const { return exec_->program().h.max_context; }

GenerateResult CudaBackend::generate(const GenerateRequest& req, const TokenCallback& on_token) {
  const exec::Sequence s = sequence_for(req, max_context(), "cuda backend");
  bool stopped = false;
  return result_of(exec_->run({s}, run_options_for(req, on_token, &stopped)), stopped);
}

std::vector<float> CudaBackend::score(std::span<const int32_t> ids) {
  const exec::Sequence s = score_sequence(ids, max_context(), "cuda backend: score");
  exec::RunOptions ro;
  ro.capture_logits = true;
  exec::RunResult r = exec_->run({s}, ro);
  const size_t V = size_t(exec_->program().h.vocab);
  KEEL_CHECK(r.seqs[0].logits.size() == ids.size() * V, "cuda backend: captured ", r.seqs[0].logits.size() / V,
             " logit rows for ", ids.size(), " tokens");
  return std::move(r.seqs[0].logits);
}

}  // namespace keel::engine
