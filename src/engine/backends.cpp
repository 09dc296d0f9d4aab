// The backend registry (see backends.h).
#include "engine/backends.h"

#include "compiler/target.h"
#include "core/error.h"
#include "engine/cpu_backend.h"
#include "engine/reference_backend.h"
#if KEEL_HAVE_CUDA
#include "engine/cuda_backend.h"
#endif

namespace keel::engine {

const std::vector<BackendEntry>& backend_registry() {
  static const std::vector<BackendEntry> registry = [] {
    std::vector<BackendEntry> r;
    r.push_back({"reference", "fp32 forward pass, the ground truth",
                 [](const model::Model& m, const BackendConfig& c) -> std::unique_ptr<Backend> {
                   return std::make_unique<ReferenceBackend>(m, c.max_context);
                 }});
    r.push_back({"cpu", "compiled Program on CPU workers",
                 [](const model::Model& m, const BackendConfig& c) -> std::unique_ptr<Backend> {
                   CpuBackendOptions o;
                   if (c.workers > 0) o.workers = c.workers;
                   o.shuffle = c.shuffle_seed >= 0;
                   o.shuffle_seed = c.shuffle_seed >= 0 ? uint64_t(c.shuffle_seed) : 0;
                   o.max_context = c.max_context;
                   o.batch = c.batch;
                   return std::make_unique<CpuBackend>(m, o);
                 }});
#if KEEL_HAVE_CUDA
    r.push_back({"cuda", "compiled Program as one persistent GPU megakernel",
                 [](const model::Model& m, const BackendConfig& c) -> std::unique_ptr<Backend> {
                   CudaBackendOptions o;
                   o.max_context = c.max_context;
                   if (c.target != "auto") o.target = compiler::target_preset(c.target);
                   o.batch = c.batch;
                   return std::make_unique<CudaBackend>(m, o);
                 }});
#endif
    return r;
  }();
  return registry;
}

std::vector<std::string> backend_names() {
  std::vector<std::string> names;
  for (const BackendEntry& e : backend_registry()) names.emplace_back(e.name);
  return names;
}

std::string backend_list() {
  std::string s;
  for (const BackendEntry& e : backend_registry()) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

std::unique_ptr<Backend> make_backend(std::string_view name, const model::Model& m, const BackendConfig& cfg) {
  for (const BackendEntry& e : backend_registry())
    if (e.name == name) return e.make(m, cfg);
  fail("unknown backend '", name, "' (this keel binary has: ", backend_list(), ")");
}

}  // namespace keel::engine
