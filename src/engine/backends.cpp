// The backend registry (see backends.h).
#include "engine/backends.h"

#include "compiler/target.h"
#include "core/error.h"
#include "engine/cpu_backend.h"
#include "engine/reference_backend.h"
#if KEEL_HAVE_CUDA
#include "engine/cuda_backend.h"
#include "exec/cuda/device_info.h"
#endif

#include <unistd.h>

namespace keel::engine {

const std::vector<BackendEntry>& backend_registry() {
  static const std::vector<BackendEntry> registry = [] {
    std::vector<BackendEntry> r;
    r.push_back({"reference", "fp32 forward pass, the ground truth",
                 [](const model::Model& m, const BackendConfig& c) -> std::unique_ptr<Backend> {
                   return std::make_unique<ReferenceBackend>(m, c.max_context, c.prefix_reuse);
                 }});
    r.push_back({"cpu", "compiled Program on CPU workers",
                 [](const model::Model& m, const BackendConfig& c) -> std::unique_ptr<Backend> {
                   CpuBackendOptions o;
                   if (c.workers > 0) o.workers = c.workers;
                   o.shuffle = c.shuffle_seed >= 0;
                   o.shuffle_seed = c.shuffle_seed >= 0 ? uint64_t(c.shuffle_seed) : 0;
                   o.max_context = c.max_context;
                   o.batch = c.batch;
                   if (c.prefill_chunk >= 0) o.prefill_chunk = c.prefill_chunk;
                   o.mixed_prefill = c.mixed_prefill;
                   o.prefix_reuse = c.prefix_reuse;
                   o.small_batches = c.small_batches;
                   o.kv_tokens = c.kv_tokens;
                   return std::make_unique<CpuBackend>(m, o);
                 }});
#if KEEL_HAVE_CUDA
    r.push_back({"cuda", "compiled Program as one persistent GPU megakernel",
                 [](const model::Model& m, const BackendConfig& c) -> std::unique_ptr<Backend> {
                   CudaBackendOptions o;
                   o.max_context = c.max_context;
                   if (c.target != "auto") o.target = compiler::target_preset(c.target);
                   o.batch = c.batch;
                   if (c.prefill_chunk >= 0) o.prefill_chunk = c.prefill_chunk;
                   o.mixed_prefill = c.mixed_prefill;
                   o.prefix_reuse = c.prefix_reuse;
                   o.small_batches = c.small_batches;
                   o.kv_tokens = c.kv_tokens;
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

namespace {

/// A quarter of the host's physical memory: what the cpu and reference
/// backends' KV cache may take by default.
uint64_t host_kv_budget() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) / 4 : uint64_t(4) << 30;
}

}  // namespace

ContextChoice default_context(std::string_view name, const model::Model& m) {
  const model::ModelConfig& c = m.config;
#if KEEL_HAVE_CUDA
  if (name == "cuda") {
    // The device's free memory now, less the weights the backend is about to
    // upload and 1 GiB for the workspace, logits, CUDA context and rounding.
    const auto gpus = exec::cuda::list_gpus();
    KEEL_CHECK(!gpus.empty(), "cuda backend: no CUDA device");
    const uint64_t weights = uint64_t(c.param_count()) * dtype_size(m.weight_dtype);
    const uint64_t reserve = weights + (uint64_t(1) << 30);
    const uint64_t free = gpus[0].memory_free_bytes;
    const uint64_t budget = free > reserve ? free - reserve : 0;
    // (The prefill Program shares the decode Program's cache.)
    return choose_context(c, kv_bytes_per_token(c, 2), budget,
                          cat("GPU memory free after the weights (", gib(free), " free, weights ", gib(weights),
                              ", 1 GiB kept)"));
  }
#endif
  // The compiled Programs keep K/V in bf16; the reference in fp32, grown on demand.
  const uint64_t elem = name == "reference" ? 4 : 2;
  return choose_context(c, kv_bytes_per_token(c, elem), host_kv_budget(), "host memory (a quarter of it)");
}

std::unique_ptr<Backend> make_backend(std::string_view name, const model::Model& m, const BackendConfig& cfg) {
  for (const BackendEntry& e : backend_registry())
    if (e.name == name) return e.make(m, cfg);
  fail("unknown backend '", name, "' (this keel binary has: ", backend_list(), ")");
}

}  // namespace keel::engine
