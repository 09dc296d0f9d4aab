// GPU tests of the megakernel (ProgramExecutor with its weight ring) on the
// golden fixtures: greedy tokens vs Hugging Face (golden.json) for every fixture
// at several worker counts, the three launch modes producing the same tokens,
// the CUDA backend's streaming / stop rules / sampling / clear errors, and
// Qwen3-8B-shaped random weights: every mode runs, and the first greedy tokens
// agree with the CPU executor on the same weights. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <span>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <filesystem>

#include "common/variant_model.h"
#include "compiler/compiler.h"
#include "core/dtype.h"
#include "core/error.h"
#include "exec/cpu/executor.h"
#include "engine/backends.h"
#include "engine/cuda_backend.h"
#include "exec/cuda/device_info.h"
#include "exec/cuda/plan_check.h"
#include "exec/cuda/program_executor.h"
#include "model/model.h"
#include "model/safetensors.h"

namespace keel::exec::cuda {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

// KEEL_SHARED_DIR in the environment overrides the build's (the GPU machine
// gets a carried copy of the fixtures).
std::string shared_dir() {
  const char* e = std::getenv("KEEL_SHARED_DIR");
  return e && *e ? e : KEEL_SHARED_DIR;
}
std::string fixture(const std::string& name) { return shared_dir() + "/fixtures/" + name; }
std::string model_dir(const std::string& name) {
  return name == "stories260K" ? shared_dir() + "/models/stories260K" : fixture(name);
}

struct Golden {
  std::vector<int32_t> ids, greedy;
  std::vector<double> margins;
};

std::vector<Golden> read_golden(const std::string& name) {
  std::ifstream f(fixture(name) + "/golden.json");
  auto j = nlohmann::json::parse(f);
  std::vector<Golden> out;
  for (const auto& p : j["prompts"]) {
    Golden g;
    for (auto v : p["ids"]) g.ids.push_back(v.get<int32_t>());
    for (auto v : p["greedy"]) g.greedy.push_back(v.get<int32_t>());
    for (auto v : p["margins"]) g.margins.push_back(v.get<double>());
    out.push_back(g);
  }
  return out;
}

// bf16 activations (inputs of every matvec, q/k/v, attention output, MLP
// hidden) perturb the logits of these models by a few 1e-2 at most; a greedy
// step whose top-1/top-2 margin is below this may legitimately pick the
// runner-up, after which the sequences diverge.
constexpr double kMarginTol = 0.1;

std::unique_ptr<ProgramExecutor> executor_for(const model::Model& m, int workers, int context) {
  compiler::CompileOptions co;
  co.target = device_target(0);  // this GPU's shared memory; `workers` may be fewer than its SMs
  co.workers = workers;
  co.max_context = context;
  ProgramExecutorOptions o;
  o.keep_worker_count = true;
  return std::make_unique<ProgramExecutor>(compiler::compile(m.config, co), m, o);
}

std::vector<int32_t> greedy(ProgramExecutor& ex, const std::vector<int32_t>& prompt, int n) {
  exec::Sequence s;
  s.prompt = prompt;
  s.max_new = n;
  return ex.run({s}, {}).seqs[0].tokens;
}

void expect_golden(ProgramExecutor& ex, const std::string& name, int* matched_total) {
  for (const auto& g : read_golden(name)) {
    const auto tokens = greedy(ex, g.ids, int(g.greedy.size()));
    ASSERT_EQ(tokens.size(), g.greedy.size()) << name;
    for (size_t i = 0; i < g.greedy.size(); ++i) {
      if (tokens[i] != g.greedy[i]) {
        EXPECT_LT(g.margins[i], kMarginTol) << name << " (" << ex.workers() << " workers): token " << i
                                            << " is " << tokens[i] << ", golden " << g.greedy[i];
        break;
      }
      ++*matched_total;
    }
  }
}

class Fixtures : public ::testing::TestWithParam<std::string> {};

TEST_P(Fixtures, GreedyMatchesGoldenAtSeveralWorkerCounts) {
  SKIP_WITHOUT_GPU();
  const std::string name = GetParam();
  auto m = model::Model::load(model_dir(name));
  const int sms = list_gpus()[0].sm_count;
  for (int workers : {sms, 7, 1, 2 * sms / 3 + 1}) {
    auto ex = executor_for(m, workers, 256);
    int matched = 0;
    expect_golden(*ex, name, &matched);
    // Most golden steps have margins far above the tolerance: require the bulk to match.
    EXPECT_GE(matched, 24) << name << " with " << workers << " workers";
  }
}

TEST_P(Fixtures, LaunchModesProduceTheSameTokens) {
  SKIP_WITHOUT_GPU();
  auto m = model::Model::load(model_dir(GetParam()));
  auto ex = executor_for(m, list_gpus()[0].sm_count, 128);
  ex->fill_kv_random();
  ex->time_steps(LaunchMode::Megakernel, 8, 40);
  auto mk = ex->last_step_tokens();
  ex->time_steps(LaunchMode::PerOp, 8, 40);
  auto po = ex->last_step_tokens();
  ex->time_steps(LaunchMode::Graph, 8, 40);
  auto gr = ex->last_step_tokens();
  // The same task code in the same order; only split-K atomic adds may round in
  // another order (ulps), which flips a greedy pick only on an exact near-tie.
  EXPECT_EQ(mk, po);
  EXPECT_EQ(mk, gr);
}

INSTANTIATE_TEST_SUITE_P(All, Fixtures,
                         ::testing::Values("tiny-llama3", "tiny-qwen2", "tiny-qwen3", "stories260K"));

TEST(CudaBackend, StreamsStopsAndChecksRequests) {
  SKIP_WITHOUT_GPU();
  auto m = model::Model::load(model_dir("stories260K"));
  engine::CudaBackendOptions o;
  o.max_context = 64;
  engine::CudaBackend be(m, o);
  auto g = read_golden("stories260K")[0];
  engine::GenerateRequest req;
  req.prompt = g.ids;
  req.max_tokens = 20;
  std::vector<int32_t> streamed;
  auto r = be.generate(req, [&](int32_t t) {
    streamed.push_back(t);
    return streamed.size() < 5;  // stop after 5
  });
  EXPECT_EQ(r.stop_reason, "stopped");
  EXPECT_EQ(r.output.size(), 5u);
  EXPECT_EQ(streamed, r.output);
  // EOS: ask to stop at the golden's third token.
  req.eos_ids = {g.greedy[2]};
  r = be.generate(req, {});
  EXPECT_EQ(r.stop_reason, "eos");
  EXPECT_EQ(r.output.size(), 3u);
  // Context end.
  req.eos_ids = {};
  req.max_tokens = 1000;
  r = be.generate(req, {});
  EXPECT_EQ(r.stop_reason, "context");
  // A sequence never holds more than max_context tokens (program::context_full), on every backend.
  EXPECT_EQ(int64_t(req.prompt.size() + r.output.size()), be.max_context());
  // Sampling runs on the device (same draws as the CPU executor; see test_program_gpu).
  req.prompt = g.ids;
  req.max_tokens = 8;
  req.sampling.temperature = 0.8f;
  req.sampling.top_k = 40;
  req.sampling.seed = 3;
  auto s1 = be.generate(req, {});
  auto s2 = be.generate(req, {});
  EXPECT_EQ(s1.output.size(), 8u);
  EXPECT_EQ(s1.output, s2.output);  // same seed, same tokens
  // score(): teacher-forced logits, one row per id.
  auto logits = be.score(g.ids);
  EXPECT_EQ(logits.size(), g.ids.size() * size_t(m.config.vocab));
  // Bad requests.
  req.sampling = {};
  req.prompt = {1, 100000};
  EXPECT_THROW(be.generate(req, {}), Error);
  req.prompt = std::vector<int32_t>(65, 1);
  EXPECT_THROW(be.generate(req, {}), Error);
  req.prompt = {};
  EXPECT_THROW(be.generate(req, {}), Error);
}

// Issue 11's acceptance on the GPU: same seed, same sampling flags -> the same
// tokens on reference, cpu and cuda (stories260K, temperature 0.8, top-p 0.9),
// each built through the backend registry. The host half (reference = cpu,
// with the measured agreement over seeds) is tests/engine/test_backends.cpp;
// cpu and cuda share the Program's rounding points, so they agree on most
// seeds (summation order can still part them late); seed 7 agrees on all
// three. And the context end: the same token count on all three.
TEST(CudaBackend, SameSeedSameTokensAsReferenceAndCpu) {
  SKIP_WITHOUT_GPU();
  auto m = model::Model::load(model_dir("stories260K"));
  engine::BackendConfig c;
  c.max_context = 256;
  auto ref = engine::make_backend("reference", m, c);
  auto cpu = engine::make_backend("cpu", m, c);
  auto gpu = engine::make_backend("cuda", m, c);
  engine::GenerateRequest req;
  req.prompt = {1, 403, 407, 261, 378};
  req.max_tokens = 40;
  req.sampling.temperature = 0.8f;
  req.sampling.top_p = 0.9f;
  req.sampling.seed = 7;
  const auto want = ref->generate(req, {});
  ASSERT_EQ(want.output.size(), 40u);
  EXPECT_EQ(cpu->generate(req, {}).output, want.output);
  EXPECT_EQ(gpu->generate(req, {}).output, want.output);
  // cpu and cuda round at the same points but sum in different orders, so a
  // bf16 rounding can land one ulp apart and move a later draw across a
  // boundary: measured on an H200, seeds 0..9 agree on all 40 tokens except
  // seed 5, which parts after 32 equal tokens. A wrong sampler parts within
  // the first few tokens; the sweep asserts most seeds agree throughout and
  // every seed agrees on its first 16 tokens.
  int agree = 0;
  for (uint64_t seed = 0; seed < 10; ++seed) {
    req.sampling.seed = seed;
    const auto g = gpu->generate(req, {}).output, h = cpu->generate(req, {}).output;
    ASSERT_EQ(g.size(), h.size()) << "seed " << seed;
    size_t same = 0;
    while (same < g.size() && g[same] == h[same]) ++same;
    agree += same == g.size();
    EXPECT_GE(same, 16u) << "seed " << seed;
  }
  EXPECT_GE(agree, 8) << "of 10 seeds";
  c.max_context = 24;
  ref = engine::make_backend("reference", m, c);
  cpu = engine::make_backend("cpu", m, c);
  gpu = engine::make_backend("cuda", m, c);
  req.sampling = {};
  req.max_tokens = 100;
  for (size_t n : {21u, 23u, 24u}) {
    req.prompt.assign(n, 0);
    for (size_t i = 0; i < n; ++i) req.prompt[i] = int32_t(1 + (i * 37) % 400);
    const auto a = ref->generate(req, {});
    EXPECT_EQ(a.output.size(), 24 - n);
    EXPECT_EQ(cpu->generate(req, {}).output.size(), a.output.size()) << "prompt " << n;
    const auto b = gpu->generate(req, {});
    EXPECT_EQ(b.output.size(), a.output.size()) << "prompt " << n;
    EXPECT_EQ(b.stop_reason, "context");
  }
}

namespace {

// Greedy runs of two Programs (or two runs) of stories260K: the first 12
// tokens equal (a stop among them at the same token); past them the fp32
// sums' order (split-K atomics, run to run) may part a near tie, and with it
// where EOS comes.
bool head_equal(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min<size_t>({a.size(), b.size(), 12});
  return std::equal(a.begin(), a.begin() + std::ptrdiff_t(n), b.begin()) && (n == 12 || a.size() == b.size());
}
// The same, up to a near tie among the first 12 (the two runs' picks within
// 0.05 of log-probability: stories260K has ties that close, which the
// atomics' order and the two backends' prefill chunks part either way from run
// to run; seen: 0.034 on an H100, 411 at -1.627 against 424 at -1.593, while
// a wrong cache or draw parts the tokens by far more). Needs logprobs.
bool agree(const engine::GenerateResult& a, const engine::GenerateResult& b) {
  const size_t n = std::min<size_t>({a.output.size(), b.output.size(), 12});
  for (size_t i = 0; i < n; ++i)
    if (a.output[i] != b.output[i])
      return i < a.logprobs.size() && i < b.logprobs.size() && std::abs(a.logprobs[i] - b.logprobs[i]) < 0.05f;
  return head_equal(a.output, b.output);
}
std::string show(const engine::GenerateResult& a, const engine::GenerateResult& b) {
  std::string s = "got";
  for (size_t i = 0; i < a.output.size(); ++i)
    s += " " + std::to_string(a.output[i]) + (i < a.logprobs.size() ? "(" + std::to_string(a.logprobs[i]) + ")" : "");
  s += "\nwant";
  for (size_t i = 0; i < b.output.size(); ++i)
    s += " " + std::to_string(b.output[i]) + (i < b.logprobs.size() ? "(" + std::to_string(b.logprobs[i]) + ")" : "");
  return s;
}

}  // namespace

// The cuda backend's KV pages (engine/kv_pages.h): a conversation's next turn
// and a system prompt shared by a batch take their positions from the cache
// (page tables from the pool, prefill from kv_filled, a copied partial page),
// a resumed sampled generation draws on (SeqState::draw0); the tokens are a
// backend without reuse's (the first 12: fp32 sums in another order may part
// a near tie later, as in the test above).
TEST(CudaBackend, PrefixReuseAndResumedDrawsGiveTheFreshTokens) {
  SKIP_WITHOUT_GPU();
  auto m = model::Model::load(model_dir("stories260K"));
  engine::BackendConfig c;
  c.max_context = 512;
  c.batch = 4;
  c.prefill_chunk = 16;
  auto gpu = engine::make_backend("cuda", m, c);
  c.prefix_reuse = false;
  auto fresh = engine::make_backend("cuda", m, c);
  engine::GenerateRequest r1;
  r1.prompt = {1, 403, 407, 261, 378};
  r1.max_tokens = 30;
  r1.logprobs = true;
  const auto a1 = gpu->generate(r1, {});
  engine::GenerateRequest r2 = r1;
  r2.prompt.insert(r2.prompt.end(), a1.output.begin(), a1.output.end());
  for (int i = 0; i < 40; ++i) r2.prompt.push_back(int32_t(300 + (i * 7) % 150));
  const auto a2 = gpu->generate(r2, {}), f2 = fresh->generate(r2, {});
  EXPECT_EQ(a2.cached_tokens, int64_t(r1.prompt.size() + a1.output.size() - 1));
  EXPECT_TRUE(agree(a2, f2)) << show(a2, f2);
  // A shared system prompt in one batch: the first prefills it, the others share its pages.
  std::vector<engine::GenerateRequest> reqs(4);
  for (size_t i = 0; i < reqs.size(); ++i) {
    for (int j = 0; j < 150; ++j) reqs[i].prompt.push_back(int32_t(260 + (j * 37) % 240));
    for (int j = 0; j < 3 + int(i); ++j) reqs[i].prompt.push_back(int32_t(300 + 11 * int(i) + j));
    reqs[i].max_tokens = 16;
    reqs[i].logprobs = true;
  }
  const auto got = gpu->generate_batch(reqs, {}), want = fresh->generate_batch(reqs, {});
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_TRUE(agree(got[i], want[i])) << "request " << i << "\n" << show(got[i], want[i]);
    if (i > 0) {
      EXPECT_GE(got[i].cached_tokens, 128) << "request " << i;
    }
  }
  // A resumed sampled generation.
  engine::GenerateRequest s = r1;
  s.logprobs = false;
  s.sampling.temperature = 0.9f;
  s.sampling.seed = 11;
  s.max_tokens = 24;
  const auto whole = gpu->generate(s, {});
  ASSERT_EQ(whole.output.size(), 24u);
  engine::GenerateRequest rest = s;
  rest.prompt.insert(rest.prompt.end(), whole.output.begin(), whole.output.begin() + 9);
  rest.max_tokens = 15;
  rest.draws_before = 9;
  EXPECT_TRUE(head_equal(gpu->generate(rest, {}).output, std::vector<int32_t>(whole.output.begin() + 9, whole.output.end())));
}

// A prompt joining sequences ready to decode is prefilled on the mixed Program
// (16 decode lanes beside 48 prefill lanes: engine/paged_launch.h) while they
// decode: request 0 has a token out for every prefill step of request 1
// before request 1 has its first. Tokens as a batch-1 backend's (the first 12,
// as above).
TEST(CudaBackend, AJoiningPromptIsPrefilledBesideTheOthers) {
  SKIP_WITHOUT_GPU();
  auto m = model::Model::load(model_dir("stories260K"));
  engine::BackendConfig c;
  c.max_context = 512;
  auto one = engine::make_backend("cuda", m, c);
  c.batch = 16;
  auto gpu = engine::make_backend("cuda", m, c);
  auto* mixed = dynamic_cast<engine::CudaBackend&>(*gpu).mixed_executor();
  ASSERT_NE(mixed, nullptr);
  EXPECT_EQ(mixed->program().h.decode_lanes, 16);
  EXPECT_EQ(mixed->program().h.seq_lanes, 48);
  std::vector<engine::GenerateRequest> reqs(3);
  reqs[0].prompt = {1};
  reqs[0].max_tokens = 40;
  for (int j = 0; j < 300; ++j) reqs[1].prompt.push_back(int32_t(1 + (j * 37) % 400));  // 7 steps of 48
  for (int j = 0; j < 200; ++j) reqs[2].prompt.push_back(int32_t(5 + (j * 53) % 400));
  reqs[1].max_tokens = reqs[2].max_tokens = 16;
  std::vector<int> order;
  const auto got = gpu->generate_batch(reqs, [&](int i, int32_t) {
    order.push_back(i);
    return true;
  });
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto want = one->generate(reqs[i], {});
    const size_t n = std::min<size_t>({got[i].output.size(), want.output.size(), 12});
    EXPECT_EQ(got[i].output.size(), want.output.size()) << "request " << i;
    EXPECT_TRUE(std::equal(want.output.begin(), want.output.begin() + std::ptrdiff_t(n), got[i].output.begin()))
        << "request " << i;
  }
  const auto first1 = std::find(order.begin(), order.end(), 1);
  EXPECT_GE(std::count(order.begin(), first1, 0), 7);
}

// A backend of batch 8 holds decode Programs of 1, 2 and 4 sequences too;
// a launch decodes on the smallest that holds it, with the tokens of the
// batch's Program (greedy, up to a near tie: agree()).
TEST(CudaBackend, ALaunchDecodesOnTheSmallestProgramThatHoldsIt) {
  SKIP_WITHOUT_GPU();
  auto m = model::Model::load(model_dir("stories260K"));
  engine::BackendConfig c;
  c.max_context = 512;
  c.batch = 8;
  auto buckets = engine::make_backend("cuda", m, c);
  EXPECT_EQ(dynamic_cast<engine::CudaBackend&>(*buckets).small_batches(), (std::vector<int>{1, 2, 4}));
  c.small_batches = false;
  auto fixed = engine::make_backend("cuda", m, c);
  EXPECT_TRUE(dynamic_cast<engine::CudaBackend&>(*fixed).small_batches().empty());
  std::vector<engine::GenerateRequest> reqs(5);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt = {1, int32_t(403 - 20 * i), int32_t(261 + 7 * i)};
    reqs[i].max_tokens = 24;
    reqs[i].logprobs = true;
  }
  for (size_t n : {size_t(1), size_t(3), size_t(5)}) {
    const std::span<const engine::GenerateRequest> launch(reqs.data(), n);
    const auto got = buckets->generate_batch(launch, {}), want = fixed->generate_batch(launch, {});
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(got[i].program_batch, n == 1 ? 1 : n <= 4 ? 4 : 8) << n << " requests";
      EXPECT_EQ(want[i].program_batch, 8);
      EXPECT_TRUE(agree(got[i], want[i])) << n << " requests, request " << i << "\n" << show(got[i], want[i]);
    }
  }
}

// A long-context backend also holds decode Programs of engine::kShortContext
// positions (no attn_stream staging buffer: the ring keeps its third stage);
// a launch that fits one decodes on it, a longer one on the full context's;
// the tokens are those of batch-1 backends of the two contexts (agree()).
TEST(CudaBackend, AShortLaunchDecodesOnTheShortContextProgram) {
  SKIP_WITHOUT_GPU();
  keel::testing::VariantModel v = keel::testing::load_variant(
      shared_dir() + "/fixtures/tiny-qwen3", [](nlohmann::json& c) { c["max_position_embeddings"] = 8192; });
  const model::Model& m = v.model;
  engine::BackendConfig c;
  c.max_context = 8192;
  c.batch = 2;
  auto both = engine::make_backend("cuda", m, c);
  ASSERT_EQ(both->decode_programs().size(), 4u);
  EXPECT_EQ(both->decode_programs()[0].context, engine::kShortContext);
  c.batch = 1;
  auto long_one = engine::make_backend("cuda", m, c);
  c.max_context = engine::kShortContext;
  auto short_one = engine::make_backend("cuda", m, c);
  engine::GenerateRequest shortr, longr;
  shortr.prompt = keel::testing::random_ids(40, m.config.vocab, 5);
  shortr.max_tokens = 24;
  shortr.logprobs = true;
  longr.prompt = keel::testing::random_ids(4050, m.config.vocab, 6);
  longr.max_tokens = 60;
  longr.logprobs = true;
  const auto s = both->generate(shortr, {}), l = both->generate(longr, {});
  EXPECT_EQ(s.program_context, engine::kShortContext);
  EXPECT_EQ(l.program_context, 8192);
  const auto ws = short_one->generate(shortr, {}), wl = long_one->generate(longr, {});
  EXPECT_TRUE(agree(s, ws)) << show(s, ws);
  EXPECT_TRUE(agree(l, wl)) << show(l, wl);
}

// Full-width Qwen3-8B matrices (hidden 4096, intermediate 12288, 32/8 heads,
// vocab 151936), two layers so the CPU executor can check them in seconds.
model::ModelConfig qwen3_8b_two_layers(nlohmann::json* raw) {
  const std::string path = shared_dir() + "/models/qwen3-tokenizer/Qwen3-8B/config.json";
  std::ifstream f(path);
  *raw = nlohmann::json::parse(f);
  (*raw)["num_hidden_layers"] = 2;
  // layer_types lists one entry per layer (transformers and keel refuse another length).
  if (raw->contains("layer_types")) {
    nlohmann::json two = nlohmann::json::array();
    for (int l = 0; l < 2; ++l) two.push_back((*raw)["layer_types"].at(size_t(l)));
    (*raw)["layer_types"] = two;
  }
  auto cfg = model::ModelConfig::load(path);
  cfg.n_layers = 2;
  return cfg;
}

TEST(CudaRandomWeights, Qwen3_8BShapeRunsInEveryModeAndAgreesWithTheCpu) {
  SKIP_WITHOUT_GPU();
  nlohmann::json raw;
  const auto cfg = qwen3_8b_two_layers(&raw);
  compiler::CompileOptions co;
  co.target = device_target(0);
  co.max_context = 160;
  ProgramExecutor ex(cfg, co, 5);
  ex.fill_kv_random();
  ex.time_steps(LaunchMode::Megakernel, 64, 16);
  auto mk = ex.last_step_tokens();
  ex.time_steps(LaunchMode::Graph, 64, 16);
  EXPECT_EQ(mk, ex.last_step_tokens());
  for (int32_t t : mk) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, cfg.vocab);
  }
  // The same weights as an f32 checkpoint (bf16 values are exact in f32) for the CPU executor.
  const auto dir = std::filesystem::temp_directory_path() / "keel_qwen3_8b_shape";
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "config.json") << raw.dump(2);
    const program::Program& p = ex.program();
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
    std::vector<std::vector<float>> values;
    std::map<std::string, bool> seen;
    for (size_t i = 0; i < p.buffers.size(); ++i) {
      const auto& b = p.buffers[i];
      if (program::BufferKind(b.kind) != program::BufferKind::Weight) continue;
      const std::string name(b.name_view());
      if (seen[name]) continue;
      seen[name] = true;
      const auto bytes = ex.download_buffer(int32_t(i));
      std::vector<float> v(b.count);
      for (size_t k = 0; k < v.size(); ++k) v[k] = load_as_f32(bytes.data(), DType(b.dtype), k);
      shapes.push_back({name, b.cols > 1 && b.rows > 1 ? std::vector<int64_t>{b.rows, b.cols}
                                                       : std::vector<int64_t>{int64_t(b.count)}});
      values.push_back(std::move(v));
    }
    std::vector<const float*> data;
    for (const auto& v : values) data.push_back(v.data());
    model::write_safetensors_f32((dir / "model.safetensors").string(), shapes, data);
  }
  auto m = model::Model::load(dir.string());
  const std::vector<int32_t> prompt = {9707, 11, 1879, 0};
  const auto gpu = greedy(ex, prompt, 6);
  compiler::CompileOptions cc;
  cc.workers = 16;
  cc.max_context = 32;
  const program::Program cp = compiler::compile(m.config, cc);
  cpu::CpuExecutor cpu_ex(cp, m);
  exec::Sequence s;
  s.prompt = prompt;
  s.max_new = 6;
  const auto cpu = cpu_ex.run({s}, {}).seqs[0].tokens;
  std::filesystem::remove_all(dir);
  // bf16 rounding is the same on both; only summation order differs, so the
  // first tokens agree unless two logits tie to within ~1e-5 (random weights
  // spread the top logits far wider).
  ASSERT_EQ(gpu.size(), cpu.size());
  EXPECT_EQ(gpu[0], cpu[0]);
  EXPECT_EQ(gpu[1], cpu[1]);
  int same = 0;
  for (size_t i = 0; i < gpu.size(); ++i) same += gpu[i] == cpu[i];
  EXPECT_GE(same, 4) << "gpu and cpu greedy tokens diverged early";
}

}  // namespace
}  // namespace keel::exec::cuda
