// Long-context features on the CPU executor against the reference forward pass
// (tests/common/variant_model.h's cases: the fixtures' weights under edited
// configs): YaRN RoPE scaling at positions past original_max_position_embeddings,
// and sliding-window attention (qwen2: some layers; mistral: every layer) on
// prompts much longer than the window, with several KV chunks per head so that
// chunks wholly outside the window and chunks the window cuts both occur.
// Teacher-forced logits at every position, batch 1 and 3 (sequences of
// different lengths, so different positions in one step).
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>

#include "common/variant_model.h"
#include "compiler/compiler.h"
#include "exec/cpu/executor.h"
#include "program/checker.h"
#include "reference/forward.h"
#include "reference/golden.h"

namespace keel::exec::cpu {
namespace {

using testing::rel_err;

// As test_exec_cpu.cpp's kLogitsTol (the bf16 rounding points of the compiled
// Program against the fp32 reference: measured 0.3-1.5%, a real mistake > 20%).
constexpr double kLogitsTol = 3e-2;

std::string fixture_dir(const char* name) { return std::string(KEEL_SHARED_DIR) + "/fixtures/" + name; }

/// Teacher-forced logits of every position of `prompt` on the reference.
std::vector<float> reference_logits(const model::Model& m, const std::vector<int32_t>& prompt, int64_t ctx) {
  reference::Forward ref(m, ctx);
  return ref.forward(prompt, true);
}

/// The worst relative error, over positions [from, T), between two [T, V] logit tables.
double worst_err(const std::vector<float>& a, const std::vector<float>& b, int64_t V, size_t from = 0) {
  double worst = 0;
  for (size_t t = from; t < a.size() / size_t(V); ++t)
    worst = std::max(worst, rel_err(&a[t * size_t(V)], &b[t * size_t(V)], size_t(V)));
  return worst;
}

struct Shape {
  int workers, batch, chunks;
  int min_chunk = -1;  // CompileOptions::attn_min_chunk (-1: the compiler's; short ones split a few dozen positions)
};

class LongContext : public ::testing::TestWithParam<testing::LongContextCase> {};

TEST_P(LongContext, LogitsMatchReference) {
  const testing::LongContextCase& lc = GetParam();
  testing::VariantModel v = testing::load_variant(fixture_dir(lc.fixture), lc.edit);
  const model::Model& m = v.model;
  const int64_t V = m.config.vocab, ctx = 128;
  for (const Shape& run : {Shape{7, 1, 0}, Shape{3, 3, 4}, Shape{5, 1, 9}, Shape{3, 3, 4, 16}, Shape{5, 2, 9, 7}}) {
    SCOPED_TRACE(cat(lc.name, " W", run.workers, " B", run.batch, " C", run.chunks, " min chunk ", run.min_chunk));
    compiler::CompileOptions o;
    o.workers = run.workers;
    o.batch = run.batch;
    o.max_context = int(ctx);
    o.page_size = 16;
    o.attn_chunks = run.chunks;
    o.attn_min_chunk = run.min_chunk;
    program::Program p = compiler::compile(m.config, o);
    program::check_or_throw(p, 2);
    CpuExecutor ex(p, m);
    std::vector<Sequence> seqs;
    for (int b = 0; b < run.batch; ++b) {
      Sequence s;
      s.prompt = testing::random_ids(lc.prompt_len - size_t(7 * b), V, uint32_t(11 + b));
      s.max_new = 1;
      seqs.push_back(s);
    }
    RunOptions ro;
    ro.shuffle = true;
    ro.shuffle_seed = uint64_t(run.workers * 31 + run.batch);
    ro.threads = 2;
    ro.capture_logits = true;
    const RunResult r = ex.run(seqs, ro);
    double worst = 0;
    for (size_t k = 0; k < seqs.size(); ++k) {
      const std::vector<float> want = reference_logits(m, seqs[k].prompt, ctx);
      ASSERT_EQ(r.seqs[k].logits.size(), want.size());
      const double e = worst_err(r.seqs[k].logits, want, V);
      worst = std::max(worst, e);
      EXPECT_LT(e, kLogitsTol) << "sequence " << k;
    }
    std::cout << "[ figures ] " << lc.name << " W" << run.workers << " B" << run.batch << " C" << p.h.n_chunks
              << " L" << p.h.attn_min_chunk
              << ": worst logits rel err vs reference " << worst << "\n";
  }
}

// The same cases through chunked prefill (a prefill Program: KvAppend and
// PrefillAttention, the window clipped per lane), the K/V copied into a decode
// Program, which then decodes the prompt's last token: its logits against the
// reference's at that position. Chunks of 5 and 16 lanes, so lanes of one
// step see windows that start at different positions.
TEST_P(LongContext, PrefillChunksMatchReference) {
  const testing::LongContextCase& lc = GetParam();
  testing::VariantModel v = testing::load_variant(fixture_dir(lc.fixture), lc.edit);
  const model::Model& m = v.model;
  const int64_t V = m.config.vocab, ctx = 128;
  Sequence s;
  s.prompt = testing::random_ids(lc.prompt_len, V, 11);
  s.max_new = 1;
  const int64_t n = int64_t(s.prompt.size()) - 1;
  const std::vector<float> want = reference_logits(m, s.prompt, ctx);
  compiler::CompileOptions o;
  o.workers = 5;
  o.max_context = int(ctx);
  o.page_size = 16;
  const program::Program dp = compiler::compile(m.config, o);
  for (int T : {5, 16}) {
    SCOPED_TRACE(cat(lc.name, " T", T));
    compiler::CompileOptions po = o;
    po.prefill_chunk = T;
    const program::Program pp = compiler::compile(m.config, po);
    program::check_or_throw(pp, 2);
    size_t prefill_attn = 0;
    for (const program::TaskDesc& t : pp.tasks)
      prefill_attn += program::Opcode(t.opcode) == program::Opcode::PrefillAttention;
    EXPECT_GT(prefill_attn, 0u) << "the prompt lanes attend with PrefillAttention";
    CpuExecutor pre(pp, m), dec(dp, m);
    RunOptions ro;
    ro.shuffle = true;
    ro.shuffle_seed = uint64_t(T);
    ro.threads = 2;
    pre.run({s}, ro);
    pre.copy_kv_to(dec, 0, 0, n);
    Sequence d = s;
    d.kv_filled = int32_t(n);
    ro.capture_logits = true;
    const RunResult r = dec.run({d}, ro);
    ASSERT_EQ(r.seqs[0].logits.size(), size_t(V));
    const double e = rel_err(r.seqs[0].logits.data(), &want[size_t(n) * V], size_t(V));
    EXPECT_LT(e, kLogitsTol);
    std::cout << "[ figures ] " << lc.name << " prefill T" << T << ": last-position logits rel err vs reference " << e
              << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(All, LongContext, ::testing::ValuesIn(testing::long_context_cases()),
                         [](const auto& i) { return std::string(i.param.name); });

// The cases check what they claim: the feature changes the reference's logits
// by far more than kLogitsTol where it applies (so an executor ignoring it
// fails), and nothing before it applies.
TEST(LongContextCases, FeaturesChangeTheLogits) {
  for (const testing::LongContextCase& lc : testing::long_context_cases()) {
    SCOPED_TRACE(lc.name);
    const std::string dir = fixture_dir(lc.fixture);
    testing::VariantModel with = testing::load_variant(dir, lc.edit);
    const std::vector<int32_t> ids = testing::random_ids(lc.prompt_len, with.model.config.vocab, 11);
    const int64_t V = with.model.config.vocab;
    const std::vector<float> a = reference_logits(with.model, ids, 128);
    if (std::string(lc.name).starts_with("window")) {
      testing::VariantModel without = testing::load_variant(dir, [&](nlohmann::json& c) {
        lc.edit(c);
        c["sliding_window"] = nullptr;
      });
      const std::vector<float> b = reference_logits(without.model, ids, 128);
      // positions 0..4 see no more than the window anyway: identical arithmetic
      std::vector<float> a0(a.begin(), a.begin() + 5 * V), b0(b.begin(), b.begin() + 5 * V);
      EXPECT_EQ(a0, b0);
      EXPECT_GT(worst_err(a, b, V, 5), 5 * kLogitsTol);
    } else {
      // yarn: the attention factor alone (1 + 0.1 ln 4, scores x 1.30) matters
      testing::VariantModel plain_factor = testing::load_variant(dir, [&](nlohmann::json& c) {
        lc.edit(c);
        c["rope_parameters"]["attention_factor"] = 1.0;
      });
      EXPECT_GT(worst_err(a, reference_logits(plain_factor.model, ids, 128), V), 2 * kLogitsTol);
      testing::VariantModel plain_rope = testing::load_variant(dir, [&](nlohmann::json& c) {
        lc.edit(c);
        c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
      });
      EXPECT_GT(worst_err(a, reference_logits(plain_rope.model, ids, 128), V), 2 * kLogitsTol);
    }
  }
}

}  // namespace
}  // namespace keel::exec::cpu
