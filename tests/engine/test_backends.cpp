// The backends agree with each other (DESIGN invariant 9: one definition per
// rule): with the same seed and sampling flags, reference and cpu generate the
// same tokens (one sampler, one counter-based RNG; the cuda twin is checked in
// tests/exec/cuda/test_megakernel.cpp), and at the context end every backend
// emits the same number of tokens. Backends are built through the registry,
// as the CLI builds them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "engine/backends.h"
#include "program/rules.h"

namespace keel::engine {
namespace {

model::Model load_stories() { return model::Model::load(std::string(KEEL_SHARED_DIR) + "/models/stories260K"); }

std::unique_ptr<Backend> make(const std::string& name, const model::Model& m, int64_t ctx) {
  BackendConfig c;
  c.max_context = ctx;
  c.workers = 5;
  c.shuffle_seed = name == "cpu" ? 3 : -1;  // any worker order gives the same tokens
  return make_backend(name, m, c);
}

TEST(BackendRegistry, ListsItsBackendsAndNamesThemInErrors) {
  const std::vector<std::string> names = backend_names();
  ASSERT_GE(names.size(), 2u);
  EXPECT_EQ(names[0], "reference");
  EXPECT_EQ(names[1], "cpu");
  const model::Model m = load_stories();
  try {
    make_backend("tpu", m, BackendConfig{64});
    FAIL() << "an unknown backend was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'tpu'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(backend_list()), std::string::npos) << msg;
  }
  for (const std::string& n : names)
    if (n != "cuda") {
      EXPECT_EQ(make(n, m, 64)->name(), n);
    }
}

// Same --seed, same sampling flags -> identical tokens on reference and cpu
// (issue 11's acceptance; the cuda backend runs the same check in the GPU
// suite). Both draw token n of sequence 0 with program::rng_uniform(seed, 0, n)
// through program::sample_token. The logits differ (fp32 reference, bf16
// rounding points in the Program: ~1% relative, see test_exec_cpu's
// kLogitsTol), so a draw that lands that close to the boundary between two
// tokens' cumulative weights may legitimately pick the neighbour, after which
// the texts part. Measured on seeds 0..39 (40 tokens each): 32 agree on every
// token, the other 8 part after 4 to 22 equal tokens. The fixed seeds below
// agree; the sweep asserts that most seeds do (30 of 40 leaves room for a
// different summation order), which a second RNG, sampler, draw counter or
// filter order on one side would break at once (it parts within a few tokens).
TEST(Backends, SameSeedSameTokensOnReferenceAndCpu) {
  const model::Model m = load_stories();
  auto ref = make("reference", m, 256);
  auto cpu = make("cpu", m, 256);
  GenerateRequest req;
  req.prompt = {1, 403, 407, 261, 378};
  req.max_tokens = 40;
  req.sampling.temperature = 0.8f;
  req.sampling.top_p = 0.9f;
  std::vector<std::vector<int32_t>> outputs;
  for (uint64_t seed : {7u, 11u, 2026u}) {
    req.sampling.seed = seed;
    const GenerateResult a = ref->generate(req, nullptr);
    const GenerateResult b = cpu->generate(req, nullptr);
    EXPECT_EQ(a.output.size(), 40u) << "seed " << seed;
    EXPECT_EQ(a.output, b.output) << "seed " << seed;
    EXPECT_EQ(a.stop_reason, b.stop_reason) << "seed " << seed;
    outputs.push_back(a.output);
  }
  EXPECT_NE(outputs[0], outputs[1]) << "the seed does not reach the sampler";
  req.sampling.temperature = 0.0f;  // and greedy is not what was compared above
  EXPECT_NE(ref->generate(req, nullptr).output, outputs[0]);

  req.sampling.temperature = 0.8f;
  int agree = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    req.sampling.seed = seed;
    agree += ref->generate(req, nullptr).output == cpu->generate(req, nullptr).output;
  }
  EXPECT_GE(agree, 30) << "of 40 seeds";
}

// A batch of ragged requests (prompt lengths 1 to 9, greedy and sampled with
// their own seeds) run together in one launch of a batch Program gives
// each request exactly what it gets alone; the reference backend's default
// generate_batch (one after another) agrees too.
TEST(Backends, BatchEqualsEachAlone) {
  const model::Model m = load_stories();
  // One worker: the split-K adds into x then happen in one fixed order, so
  // the logits, and the sampled draws near a boundary, are reproducible
  // (with several workers the atomic adds' order varies in the last bits).
  BackendConfig c;
  c.max_context = 64;
  c.workers = 1;
  auto cpu_one = make_backend("cpu", m, c);
  c.batch = 4;
  auto cpu_batch = make_backend("cpu", m, c);
  auto ref = make("reference", m, 64);
  EXPECT_EQ(cpu_batch->max_batch(), 4);
  EXPECT_EQ(ref->max_batch(), 1);
  std::vector<GenerateRequest> reqs(6);
  const std::vector<std::vector<int32_t>> prompts = {{1}, {1, 403, 407, 261, 378}, {1, 291, 400, 428},
                                                     {1, 365, 280, 267, 400, 273, 263, 304, 395}, {1, 403}, {1, 291}};
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt = prompts[i];
    reqs[i].max_tokens = 10 + int(i) * 3;
    reqs[i].eos_ids = {2};
    if (i % 2) {
      reqs[i].sampling.temperature = 0.8f;
      reqs[i].sampling.seed = 100 + i;
    }
  }
  std::vector<std::vector<int32_t>> streamed(reqs.size());
  const std::vector<GenerateResult> got = cpu_batch->generate_batch(reqs, [&](int i, int32_t t) {
    streamed[size_t(i)].push_back(t);
    return true;
  });
  const std::vector<GenerateResult> ref_got = ref->generate_batch(reqs, nullptr);
  ASSERT_EQ(got.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    const GenerateResult alone = cpu_one->generate(reqs[i], nullptr);
    EXPECT_EQ(got[i].output, alone.output) << "request " << i;
    EXPECT_EQ(got[i].stop_reason, alone.stop_reason) << "request " << i;
    EXPECT_EQ(streamed[i], got[i].output) << "request " << i;
    if (reqs[i].sampling.temperature == 0) {
      EXPECT_EQ(ref_got[i].output, alone.output) << "request " << i;
    }
  }
  // The requests of one launch share their EOS ids.
  reqs[1].eos_ids = {3};
  EXPECT_THROW(cpu_batch->generate_batch(reqs, nullptr), Error);
}

// The context end: a sequence never holds more than max_context tokens, on
// every backend (the CPU and Program executors used to emit one token more
// than the reference).
TEST(Backends, SameTokenCountAtTheContextEnd) {
  const model::Model m = load_stories();
  const int64_t ctx = 24;
  auto ref = make("reference", m, ctx);
  auto cpu = make("cpu", m, ctx);
  for (int64_t prompt_len : {ctx - 3, ctx - 1, ctx}) {
    GenerateRequest req;
    for (int64_t i = 0; i < prompt_len; ++i) req.prompt.push_back(int32_t(1 + (i * 37) % 400));
    req.max_tokens = 100;
    const GenerateResult a = ref->generate(req, nullptr);
    const GenerateResult b = cpu->generate(req, nullptr);
    EXPECT_EQ(a.output.size(), size_t(ctx - prompt_len)) << "prompt " << prompt_len;
    EXPECT_EQ(b.output.size(), a.output.size()) << "prompt " << prompt_len;
    EXPECT_EQ(a.stop_reason, "context");
    EXPECT_EQ(b.stop_reason, "context");
  }
  // One token past the context is the same clear error everywhere.
  GenerateRequest req;
  req.prompt.assign(size_t(ctx + 1), 5);
  EXPECT_THROW(ref->generate(req, nullptr), Error);
  EXPECT_THROW(cpu->generate(req, nullptr), Error);
  EXPECT_THROW(ref->score(req.prompt), Error);
  EXPECT_THROW(cpu->score(req.prompt), Error);
}

TEST(Rules, PromptBoundAndStopOrder) {
  EXPECT_TRUE(program::prompt_fits(1, 1));
  EXPECT_TRUE(program::prompt_fits(16, 16));
  EXPECT_FALSE(program::prompt_fits(17, 16));
  EXPECT_FALSE(program::prompt_fits(0, 16));
  using program::StopReason;
  EXPECT_EQ(program::stop_after_token(true, true, 5, 5, 16, 16), StopReason::Eos);
  EXPECT_EQ(program::stop_after_token(false, true, 5, 5, 16, 16), StopReason::Stopped);
  EXPECT_EQ(program::stop_after_token(false, false, 5, 5, 16, 16), StopReason::MaxTokens);
  EXPECT_EQ(program::stop_after_token(false, false, 4, 5, 16, 16), StopReason::Context);
  EXPECT_EQ(program::stop_after_token(false, false, 4, 5, 15, 16), StopReason::None);
}

}  // namespace
}  // namespace keel::engine
