// CudaBackend: the engine::Backend over the CUDA executor, for
// `keel generate --backend cuda` and `keel chat`. generate() runs prefill and
// decode in one megakernel launch and streams tokens to the callback as the
// kernel publishes them; the per-op and graph launch modes are for benchmarks
// only (bench.h). Greedy decoding only (sampling happens on the device, and
// only argmax is implemented there so far).
#pragma once

#include <memory>
#include <string>

#include "engine/backend.h"
#include "exec/cuda/executor.h"
#include "model/model.h"

namespace keel::exec::cuda {

struct CudaBackendOptions {
  int64_t max_context = 0;           // 0: min(model context, 4096)
  std::string launch = "megakernel"; // generation always uses the megakernel
  int device = 0;
  int workers = 0;                   // 0: the device's SM count
  double watchdog_s = 3.0;
};

class CudaBackend : public engine::Backend {
 public:
  /// Uploads the weights; throws keel::Error when there is no usable GPU or
  /// not enough GPU memory.
  CudaBackend(const model::Model& m, const CudaBackendOptions& opt = {});
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  int64_t max_context() const override;
  engine::GenerateResult generate(const engine::GenerateRequest& req,
                                  const engine::TokenCallback& on_token) override;
  /// Not available on this backend (throws keel::Error naming the alternative).
  std::vector<float> score(std::span<const int32_t> ids) override;

  Executor& executor() { return *exec_; }

 private:
  std::unique_ptr<Executor> exec_;
};

}  // namespace keel::exec::cuda
