// A fixture checkpoint with its config.json edited (RoPE scaling, sliding
// windows, ...): a temporary folder holding the edited config.json and links
// to the fixture's weight files, loaded as a Model. Lets the executor tests run
// the same weights under configs no golden fixture has, against the reference.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "model/model.h"
#include "model/model_test_util.h"

namespace keel::testing {

struct VariantModel {
  std::unique_ptr<model::testing::TempDir> dir;
  model::Model model;
};

/// Loads `fixture_dir` with `edit` applied to its config.json.
inline VariantModel load_variant(const std::string& fixture_dir, const std::function<void(nlohmann::json&)>& edit) {
  namespace fs = std::filesystem;
  VariantModel v;
  v.dir = std::make_unique<model::testing::TempDir>();
  nlohmann::json cfg = nlohmann::json::parse(read_text_file(fixture_dir + "/config.json"));
  edit(cfg);
  v.dir->write("config.json", cfg.dump(2));
  for (const fs::directory_entry& e : fs::directory_iterator(fixture_dir)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".safetensors") && !name.starts_with("golden")) fs::create_symlink(fs::absolute(e.path()), v.dir->file(name));
    if (name == "model.safetensors.index.json") fs::create_symlink(fs::absolute(e.path()), v.dir->file(name));
  }
  v.model = model::Model::load(v.dir->str());
  return v;
}

/// `n` token ids drawn uniformly from [first, vocab) with a fixed seed.
inline std::vector<int32_t> random_ids(size_t n, int64_t vocab, uint32_t seed, int32_t first = 3) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> pick(first, int32_t(vocab - 1));
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = pick(rng);
  return ids;
}

/// The long-context variants the executor tests run (CPU against the
/// reference, GPU against the CPU), each with a prompt long enough to need
/// the feature.
struct LongContextCase {
  const char* name;
  const char* fixture;  // folder under fixtures/
  std::function<void(nlohmann::json&)> edit;
  size_t prompt_len;
};

inline void PrintTo(const LongContextCase& c, std::ostream* os) { *os << c.name; }

inline std::vector<LongContextCase> long_context_cases() {
  return {
      // Qwen3 long-context YaRN (factor 4), the original context cut to 32 so
      // that a 100-token prompt runs well past it.
      {"yarn_qwen3", "tiny-qwen3",
       [](nlohmann::json& c) {
         c["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32},
                                 {"rope_theta", 1e6}};
       },
       100},
      // Qwen2 sliding window 5 in the layers from max_window_layers = 1 on.
      {"window_qwen2", "tiny-qwen2",
       [](nlohmann::json& c) {
         c["use_sliding_window"] = true;
         c["sliding_window"] = 5;
         c["max_window_layers"] = 1;
         c.erase("layer_types");
       },
       40},
      // Mistral: every layer slides (the llama3 fixture's weights under model_type mistral).
      {"window_mistral", "tiny-llama3",
       [](nlohmann::json& c) {
         c["model_type"] = "mistral";
         c["sliding_window"] = 5;
       },
       40},
  };
}

}  // namespace keel::testing
