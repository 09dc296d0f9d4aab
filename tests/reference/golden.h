// Reading the golden fixtures (../shared/fixtures, see its README.md) for tests:
// prompts, greedy continuations and margins from golden.json, logits from
// golden.safetensors, and the relative-error measure the tests compare with.
// Header-only so tests in other folders (engine) can share it.
#pragma once

#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/rel_err.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/model.h"
#include "model/safetensors.h"

namespace keel::testing {

struct GoldenPrompt {
  std::vector<int32_t> ids;     // prompt token ids
  std::vector<int32_t> greedy;  // greedy continuation
  std::vector<double> margins;  // top-1 minus top-2 logit at each greedy step
};

struct Golden {
  std::string model_dir;  // checkpoint the goldens were computed from
  std::vector<GoldenPrompt> prompts;
  model::WeightStore logits;  // prompt{i}.prefill_logits [T,V], prompt{i}.step_logits [N,V]

  std::vector<float> prefill(size_t i) const {
    return logits.get("prompt" + std::to_string(i) + ".prefill_logits").to_f32();
  }
  std::vector<float> steps(size_t i) const {
    return logits.get("prompt" + std::to_string(i) + ".step_logits").to_f32();
  }
};

/// The fixture names with a golden.json under KEEL_SHARED_DIR/fixtures.
inline std::vector<std::string> golden_fixture_names() {
  return {"tiny-llama3", "tiny-qwen2", "tiny-qwen3", "stories260K"};
}

/// Loads fixtures/<name>; the checkpoint is the fixture folder itself, except
/// stories260K whose real weights live in models/stories260K.
inline Golden load_golden(const std::string& name) {
  const std::string shared = KEEL_SHARED_DIR;
  const std::string dir = path_join(path_join(shared, "fixtures"), name);
  Golden g;
  g.model_dir = name == "stories260K" ? path_join(path_join(shared, "models"), name) : dir;
  const auto js = nlohmann::json::parse(read_text_file(path_join(dir, "golden.json")));
  for (const auto& p : js.at("prompts")) {
    GoldenPrompt gp;
    gp.ids = p.at("ids").get<std::vector<int32_t>>();
    gp.greedy = p.at("greedy").get<std::vector<int32_t>>();
    gp.margins = p.at("margins").get<std::vector<double>>();
    KEEL_CHECK(gp.greedy.size() == gp.margins.size(), "golden ", name, ": greedy/margins differ in length");
    g.prompts.push_back(std::move(gp));
  }
  g.logits = model::WeightStore::open_files({path_join(dir, "golden.safetensors")});
  return g;
}

/// ‖out − ref‖ / ‖ref‖ over one row of `n` values (accumulated in double).
/// A fixture's goldens with its model loaded, cached for the whole test binary.
struct LoadedFixture {
  Golden golden;
  model::Model model;
};
inline const LoadedFixture& loaded_fixture(const std::string& name) {
  static std::map<std::string, std::unique_ptr<LoadedFixture>> cache;
  auto& slot = cache[name];
  if (!slot) {
    slot = std::make_unique<LoadedFixture>();
    slot->golden = load_golden(name);
    slot->model = model::Model::load(slot->golden.model_dir);
  }
  return *slot;
}

}  // namespace keel::testing
