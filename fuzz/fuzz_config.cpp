// libFuzzer target: ModelConfig::parse and GenerationConfig::parse on arbitrary
// text. A keel::Error is the expected answer to bad input; any other exception,
// a crash or a sanitizer report (UBSan catches signed overflow in the derived
// sizes) is a finding. For a config that parses, the invariants later stages
// rely on are checked.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    keel::model::ModelConfig c = keel::model::ModelConfig::parse(text, "fuzz/config.json");
    if (c.hidden <= 0 || c.intermediate <= 0 || c.n_layers <= 0 || c.vocab <= 0 || c.max_position <= 0)
      __builtin_trap();
    if (c.n_heads <= 0 || c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0 || c.head_dim <= 0) __builtin_trap();
    if (c.param_count() <= 0 || c.bytes_per_token(keel::DType::F32) == 0) __builtin_trap();
    if (!(c.rope.theta > 0) || !(c.rms_eps > 0)) __builtin_trap();
    for (int64_t id : c.eos_ids)
      if (id < 0 || id >= c.vocab) __builtin_trap();
  } catch (const keel::Error&) {
  }
  try {
    keel::model::GenerationConfig g = keel::model::GenerationConfig::parse(text, "fuzz/generation_config.json");
    for (int64_t id : g.eos_ids)
      if (id < 0) __builtin_trap();
  } catch (const keel::Error&) {
  }
  return 0;
}
