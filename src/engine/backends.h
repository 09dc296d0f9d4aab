// The backend registry: every way of running a model, by name ("reference",
// "cpu", and "cuda" when keel is built with CUDA), with a one-line description
// and a factory. Frontends (CLI, server) choose a backend here by name; they
// never know the adapters' types. Adding a backend = one adapter plus one entry
// in backends.cpp.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/backend.h"
#include "engine/context.h"
#include "model/model.h"

namespace keel::engine {

/// What every factory may use; a backend ignores what does not apply to it.
struct BackendConfig {
  int64_t max_context = 0;     // KV capacity in tokens (> 0)
  int workers = 0;             // cpu: logical workers of the compiled Program (0: the default)
  int64_t shuffle_seed = -1;   // cpu: randomized worker scheduling with this seed (< 0: off)
  std::string target = "auto"; // cuda: the target preset to compile for (auto: the device's own)
  int batch = 1;               // cpu, cuda: sequences per launch (Backend::max_batch)
  /// cpu, cuda: prompt positions per prefill step (a prefill Program of this
  /// many lanes, exec/common/prefill.h); 0: off; -1: the backend's default
  /// (Cuda/CpuBackendOptions::kDefaultPrefillChunk: 64, 16).
  int prefill_chunk = -1;
  /// cpu, cuda with batch > 1: prompt positions per step when a prompt is
  /// prefilled beside decoding sequences (a mixed Program); -1: the
  /// backend's default (compiler::mixed_prefill_lanes); 0: none.
  int mixed_prefill = -1;
  /// Prompt positions an earlier call left in the KV cache are not computed
  /// again (engine/kv_pages.h); false: every call computes its whole prompt.
  bool prefix_reuse = true;
  /// cpu, cuda with batch > 1: decode Programs of 1, 2, 4, ... sequences beside
  /// the batch's, so a launch of fewer sequences decodes on the smallest that
  /// holds them; false: every launch on the batch's Program.
  bool small_batches = true;
  /// cpu, cuda: KV cache capacity in tokens, shared by the sequences of a
  /// launch (each leases the pages of its prompt and max_tokens:
  /// engine/kv_pages.h); 0: max_context x batch. At least max_context.
  int64_t kv_tokens = 0;
};

struct BackendEntry {
  std::string_view name;
  std::string_view description;
  std::function<std::unique_ptr<Backend>(const model::Model&, const BackendConfig&)> make;
};

/// Every backend built into this binary, in a fixed order (reference first).
const std::vector<BackendEntry>& backend_registry();
/// Their names, in registry order.
std::vector<std::string> backend_names();
/// "reference, cpu, cuda": the names for help text and errors.
std::string backend_list();
/// The context backend `name` runs `m` with when the user names none (see
/// engine/context.h for the memory rule of each backend), with its reason.
ContextChoice default_context(std::string_view name, const model::Model& m);

/// Builds backend `name`; throws keel::Error naming the registered backends
/// when `name` is not one of them.
std::unique_ptr<Backend> make_backend(std::string_view name, const model::Model& m, const BackendConfig& cfg);

}  // namespace keel::engine
