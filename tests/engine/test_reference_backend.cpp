// ReferenceBackend: greedy generate() on stories260K reproduces the golden
// continuations, the stop rules (max_tokens, EOS, callback, context end) end
// generation with the right reason, and score() returns teacher-forced logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>

#include "core/error.h"
#include "engine/reference_backend.h"
#include "reference/golden.h"

namespace keel::engine {
namespace {

using keel::testing::load_golden;

// Where the golden top-1 / top-2 gap is below this, a correct fp32
// implementation may pick the other token (our logits match the golden to ~1e-6
// relative, ~1e-5 absolute); compare greedy ids only up to the first such step.
constexpr double kMinMargin = 1e-3;

model::Model load_stories() {
  return model::Model::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K");
}

TEST(ReferenceBackend, GreedyGenerateMatchesGolden) {
  const auto golden = load_golden("stories260K");
  const model::Model m = model::Model::load(golden.model_dir);
  ReferenceBackend be(m);
  EXPECT_EQ(be.name(), "reference");
  for (size_t i = 0; i < golden.prompts.size(); ++i) {
    const auto& p = golden.prompts[i];
    GenerateRequest req;
    req.prompt = p.ids;
    req.max_tokens = int32_t(p.greedy.size());
    std::vector<int32_t> streamed;
    const GenerateResult r = be.generate(req, [&](int32_t t) {
      streamed.push_back(t);
      return true;
    });
    EXPECT_EQ(r.stop_reason, "max_tokens");
    ASSERT_EQ(r.output.size(), p.greedy.size());
    EXPECT_EQ(streamed, r.output);
    size_t compared = 0;
    while (compared < p.greedy.size() && p.margins[compared] >= kMinMargin) {
      ASSERT_EQ(r.output[compared], p.greedy[compared]) << "prompt " << i << " step " << compared;
      ++compared;
    }
    std::cout << "[ reference backend ] prompt " << i << ": " << compared << "/" << p.greedy.size()
              << " greedy tokens match; prefill " << r.prefill_ms << " ms, decode "
              << r.decode_ms_per_token << " ms/token\n";
    EXPECT_GT(compared, 0u);
    EXPECT_GT(r.prefill_ms, 0.0);
    EXPECT_GT(r.decode_ms_per_token, 0.0);
  }
}

TEST(ReferenceBackend, StopsAtEosCallbackAndContext) {
  const auto golden = load_golden("stories260K");
  const model::Model m = model::Model::load(golden.model_dir);
  const auto& p = golden.prompts[0];
  ASSERT_GE(p.greedy.size(), 5u);
  ReferenceBackend be(m);
  const TokenCallback all = [](int32_t) { return true; };

  GenerateRequest req;
  req.prompt = p.ids;
  req.max_tokens = 3;
  GenerateResult r = be.generate(req, all);
  EXPECT_EQ(r.stop_reason, "max_tokens");
  EXPECT_EQ(r.output, std::vector<int32_t>(p.greedy.begin(), p.greedy.begin() + 3));

  // EOS: treat the 4th greedy token as end-of-sequence; it is included.
  req.max_tokens = 40;
  req.eos_ids = {p.greedy[3]};
  r = be.generate(req, all);
  EXPECT_EQ(r.stop_reason, "eos");
  const auto first_eos = std::find(p.greedy.begin(), p.greedy.end(), p.greedy[3]);
  EXPECT_EQ(r.output, std::vector<int32_t>(p.greedy.begin(), first_eos + 1));

  // The callback asks to stop after two tokens.
  req.eos_ids.clear();
  int calls = 0;
  r = be.generate(req, [&](int32_t) { return ++calls < 2; });
  EXPECT_EQ(r.stop_reason, "stopped");
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(r.output.size(), 2u);

  // Context end: prompt + generated tokens never exceed max_context.
  ReferenceBackend small(m, int64_t(p.ids.size()) + 4);
  EXPECT_EQ(small.max_context(), int64_t(p.ids.size()) + 4);
  r = small.generate(req, all);
  EXPECT_EQ(r.stop_reason, "context");
  EXPECT_EQ(r.output, std::vector<int32_t>(p.greedy.begin(), p.greedy.begin() + 4));

  // A prompt longer than the context is a clear error.
  ReferenceBackend tiny(m, 2);
  EXPECT_THROW(tiny.generate(req, all), Error);
  req.prompt.clear();
  EXPECT_THROW(be.generate(req, all), Error);
}

TEST(ReferenceBackend, SeededSamplingIsReproducible) {
  const model::Model m = load_stories();
  ReferenceBackend be(m);
  GenerateRequest req;
  req.prompt = {1, 403, 407, 261, 378};
  req.max_tokens = 32;
  req.sampling.temperature = 1.0f;
  req.sampling.top_p = 0.9f;
  req.sampling.seed = 5;
  const TokenCallback all = [](int32_t) { return true; };
  const GenerateResult a = be.generate(req, all);
  const GenerateResult b = be.generate(req, all);
  EXPECT_EQ(a.output, b.output);
  EXPECT_EQ(a.output.size(), 32u);
}

TEST(ReferenceBackend, ScoreMatchesGoldenPrefill) {
  const auto golden = load_golden("stories260K");
  const model::Model m = model::Model::load(golden.model_dir);
  ReferenceBackend be(m);
  const auto& ids = golden.prompts[1].ids;
  const std::vector<float> ref = golden.prefill(1);
  // Score twice: each call starts from a fresh cache.
  for (int rep = 0; rep < 2; ++rep) {
    const std::vector<float> out = be.score(ids);
    ASSERT_EQ(out.size(), ref.size());
    const size_t V = size_t(m.config.vocab);
    for (size_t t = 0; t < ids.size(); ++t) {
      // Same measure and reason as the reference forward tests (fp32 vs fp32,
      // differing only in summation order): 1e-4 per row.
      EXPECT_LE(keel::testing::rel_err(out.data() + t * V, ref.data() + t * V, V), 1e-4) << t;
    }
  }
  EXPECT_THROW(be.score(std::span<const int32_t>()), Error);
}

}  // namespace
}  // namespace keel::engine
