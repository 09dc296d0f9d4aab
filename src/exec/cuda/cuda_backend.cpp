// CudaBackend (see cuda_backend.h): request checks, then one megakernel launch.
#include "exec/cuda/cuda_backend.h"

#include "core/error.h"

namespace keel::exec::cuda {

CudaBackend::CudaBackend(const model::Model& m, const CudaBackendOptions& opt) {
  KEEL_CHECK(opt.launch == "megakernel" || opt.launch == "per-op" || opt.launch == "graph",
             "cuda backend: unknown launch mode '", opt.launch, "'");
  ExecutorOptions eo;
  eo.device = opt.device;
  eo.max_context = opt.max_context;
  eo.workers = opt.workers;
  eo.watchdog_s = opt.watchdog_s;
  exec_ = Executor::from_model(m, eo);
}

CudaBackend::~CudaBackend() = default;

int64_t CudaBackend::max_context() const { return exec_->max_context(); }

engine::GenerateResult CudaBackend::generate(const engine::GenerateRequest& req,
                                             const engine::TokenCallback& on_token) {
  KEEL_CHECK(req.sampling.greedy(), "cuda backend: only greedy decoding (--temperature 0) is "
             "implemented on the device; use --backend cpu or reference to sample");
  KEEL_CHECK(req.sampling.repetition_penalty == 1.0f,
             "cuda backend: --repetition-penalty is not implemented on the device");
  engine::GenerateResult r;
  auto st = exec_->generate(req.prompt, req.max_tokens, req.eos_ids, on_token);
  r.output = std::move(st.tokens);
  r.prefill_ms = st.first_token_ms;
  r.decode_ms_per_token = st.decode_ms_per_token;
  r.stop_reason = st.stop_reason;
  return r;
}

std::vector<float> CudaBackend::score(std::span<const int32_t>) {
  fail("cuda backend: score (teacher-forced logits) is not implemented on the GPU; use "
       "--backend cpu or --backend reference");
}

}  // namespace keel::exec::cuda
