// Chunked prefill on the CPU executor (ProgramHeader::seq_lanes,
// exec/common/prefill.h), in shuffle mode, for every golden fixture:
//  * prefill Programs compile, validate and pass the symbolic checker (their
//    lanes' in-step K/V dependencies included);
//  * a prompt prefilled in chunks of 2, 3, 5, 17 and the whole prompt, its K/V
//    copied into a decode Program's cache, then decoded from its last token:
//    the logits there equal the reference forward pass and the golden, and the
//    K/V equal those the decode path writes running the prompt step by step;
//  * the engine's backend with --prefill-chunk generates the tokens the plain
//    decode path generates (stories260K, greedy and seeded sampling), in
//    batches too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <set>

#include "common/kv_compare.h"
#include "common/run_options.h"
#include "common/variant_model.h"
#include "compiler/compiler.h"
#include "engine/cpu_backend.h"
#include "ops/attention.h"
#include "exec/common/prefill.h"
#include "exec/cpu/executor.h"
#include "program/checker.h"
#include "reference/forward.h"
#include "reference/golden.h"

namespace keel::exec::cpu {
namespace {

using testing::rel_err;

// Same budget as test_exec_cpu's: bf16 roundings over 2-5 layers give 0.3-1.5%
// relative error in the logits; a wrong or stale position gives > 20%.
constexpr double kLogitsTol = 3e-2;

const testing::LoadedFixture& fixture(const std::string& name) { return testing::loaded_fixture(name); }

program::Program compile_for(const model::Model& m, int workers, int prefill_chunk) {
  compiler::CompileOptions o;
  o.workers = workers;
  o.prefill_chunk = prefill_chunk;
  o.max_context = int(std::min<int64_t>(128, m.config.max_position));
  o.page_size = 16;
  return compiler::compile(m.config, o);
}

using testing::shuffled;

using testing::worst_kv_err;

class Prefill_ : public ::testing::TestWithParam<std::string> {};

TEST_P(Prefill_, ChunksMatchTheDecodePath) {
  const auto& f = fixture(GetParam());
  const int64_t V = f.model.config.vocab;
  program::Program dp = compile_for(f.model, 3, 0);
  double worst_logits = 0, worst_kv = 0;
  for (size_t pi = 0; pi < f.golden.prompts.size(); ++pi) {
    Sequence s;
    s.prompt = f.golden.prompts[pi].ids;
    s.prompt.insert(s.prompt.end(), f.golden.prompts[pi].greedy.begin(), f.golden.prompts[pi].greedy.end());
    s.max_new = 1;
    const int64_t n = int64_t(s.prompt.size()) - 1;  // positions the prefill writes
    ASSERT_GE(n, 2);
    // The decode path: the whole prompt one position a step.
    CpuExecutor plain(dp, f.model);
    plain.run({s}, shuffled(pi));
    reference::Forward ref(f.model, dp.h.max_context);
    const std::vector<float> want = ref.forward(s.prompt, true);
    for (int T : {2, 3, 5, 17, int(n)}) {  // 17: a block of prefill_attn_lanes (16 at g = 2) and one lane
      program::Program pp = compile_for(f.model, T == 5 ? 7 : 3, T);
      ASSERT_EQ(pp.h.seq_lanes, T);
      ASSERT_GE(pp.h.n_chunks, 2);
      ASSERT_EQ(pp.h.n_lm_tiles, 0);
      program::check_or_throw(pp, 3);
      CpuExecutor pre(pp, f.model), dec(dp, f.model);
      const RunResult pr = pre.run({s}, shuffled(100 + T));
      EXPECT_EQ(pr.steps, int((n + T - 1) / T)) << "T " << T;
      EXPECT_TRUE(pr.seqs[0].tokens.empty());
      pre.copy_kv_to(dec, 0, 0, n);
      Sequence d = s;
      d.kv_filled = int32_t(n);
      RunOptions ro = shuffled(200 + T);
      ro.capture_logits = true;
      const RunResult r = dec.run({d}, ro);
      ASSERT_EQ(r.seqs[0].logits.size(), size_t(V)) << "one decode position, the prompt's last";
      const double e = rel_err(r.seqs[0].logits.data(), &want[size_t(n) * V], size_t(V));
      worst_logits = std::max(worst_logits, e);
      EXPECT_LT(e, kLogitsTol) << GetParam() << " prompt " << pi << " chunk " << T;
      const double k = worst_kv_err(pre, plain, n);
      worst_kv = std::max(worst_kv, k);
      // bf16 K/V (2^-9 relative per rounding) after a few layers of bf16
      // activations; a position from the wrong lane or step is O(1).
      EXPECT_LT(k, 3e-2) << GetParam() << " prompt " << pi << " chunk " << T;
      // From an offset: the first m positions in the cache already (the decode
      // path's, copied), the prefill Program writes [m, n).
      const int64_t m = n / 2;
      if (m < 1) continue;
      CpuExecutor pre2(pp, f.model), dec2(dp, f.model);
      plain.copy_kv_to(pre2, 0, 0, m);
      Sequence from = s;
      from.kv_filled = int32_t(m);
      const RunResult pr2 = pre2.run({from}, shuffled(500 + T));
      EXPECT_EQ(pr2.steps, int((n - m + T - 1) / T)) << "T " << T << " from " << m;
      pre2.copy_kv_to(dec2, 0, 0, n);
      const RunResult r2 = dec2.run({d}, ro);
      ASSERT_EQ(r2.seqs[0].logits.size(), size_t(V));
      const double e2 = rel_err(r2.seqs[0].logits.data(), &want[size_t(n) * V], size_t(V));
      worst_logits = std::max(worst_logits, e2);
      EXPECT_LT(e2, kLogitsTol) << GetParam() << " prompt " << pi << " chunk " << T << " from " << m;
    }
    {  // one cache shared by a prefill Program (kv_sequences 3) and a decode Program of batch 3: slot 2
      program::Program d3 = [&] {
        compiler::CompileOptions o;
        o.workers = 3;
        o.batch = 3;
        o.max_context = int(std::min<int64_t>(128, f.model.config.max_position));
        o.page_size = 16;
        return compiler::compile(f.model.config, o);
      }();
      compiler::CompileOptions o = compiler::options_of(d3);
      o.batch = 1;
      o.prefill_chunk = 5;
      o.kv_sequences = 3;
      program::Program pp = compiler::compile(f.model.config, o);
      EXPECT_EQ(pp.h.n_pages, d3.h.n_pages);
      EXPECT_EQ(compiler::options_of(pp).kv_sequences, 3);
      CpuExecutor dec(d3, f.model), pre(pp, f.model, &dec);
      ASSERT_TRUE(pre.shares_kv_with(dec));
      Sequence one = s;
      one.kv_slot = 2;
      pre.run({one}, shuffled(300 + pi));
      Sequence other = s;
      other.prompt.resize(2);
      Sequence d = s;
      d.kv_filled = int32_t(n);
      RunOptions ro = shuffled(400 + pi);
      ro.capture_logits = true;
      const RunResult r = dec.run({other, other, d}, ro);
      ASSERT_EQ(r.seqs[2].logits.size(), size_t(V));
      const double e = rel_err(r.seqs[2].logits.data(), &want[size_t(n) * V], size_t(V));
      worst_logits = std::max(worst_logits, e);
      EXPECT_LT(e, kLogitsTol) << GetParam() << " prompt " << pi << " shared cache";
    }
  }
  std::cout << "[ figures ] " << GetParam() << ": worst last-position logits rel err vs reference " << worst_logits
            << ", worst K/V err vs the decode path " << worst_kv << "\n";
}

INSTANTIATE_TEST_SUITE_P(All, Prefill_, ::testing::ValuesIn(testing::golden_fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string m = i.param;
                           std::replace(m.begin(), m.end(), '-', '_');
                           return m;
                         });

// A chunk of more lanes than one matmul tile takes (kMmMaxTokens, or the
// wide tiles' 128: Target::batch_wide_mm_tokens): the matrix operators' tasks
// split the lanes in groups (130 lanes: 48 + 48 + 34, wide 72 + 58, so tiles
// start past lane 0 and end off a multiple of 8), and the norms take blocks
// of lanes (130 over 3 workers: 44, 44, 42). A 150-token random prompt in
// two chunks (130 + 19 positions) against the reference forward pass, in
// shuffle mode, and the checker passes the Program.
class PrefillWide : public ::testing::TestWithParam<int> {};

TEST_P(PrefillWide, ChunksWiderThanAMatmulTileMatchTheReference) {
  const auto& f = fixture("tiny-qwen3");
  const int64_t V = f.model.config.vocab;
  compiler::CompileOptions o;
  o.workers = 3;
  o.prefill_chunk = 130;
  o.max_context = 160;
  o.page_size = 16;
  o.target.batch_wide_mm_tokens = GetParam();
  const program::Program pp = compiler::compile(f.model.config, o);
  ASSERT_EQ(pp.h.seq_lanes, 130);
  EXPECT_EQ(pp.h.target.mm_tokens, GetParam());
  program::check_or_throw(pp, 3);
  std::set<std::pair<int, int>> groups;  // (b0, b1) of the matrix tasks
  int norm_lanes = 0;
  for (const program::TaskDesc& t : pp.tasks) {
    const program::Opcode op = program::Opcode(t.opcode);
    if (op == program::Opcode::QkvProj || op == program::Opcode::GateUp || op == program::Opcode::MatvecResidual)
      groups.insert({t.b0, t.b1});
    if (op == program::Opcode::RmsNorm) norm_lanes = std::max(norm_lanes, t.b1 - t.b0);
  }
  const std::set<std::pair<int, int>> want_groups =
      GetParam() == 0 ? std::set<std::pair<int, int>>{{0, 48}, {48, 96}, {96, 130}}
                      : std::set<std::pair<int, int>>{{0, 72}, {72, 130}};
  EXPECT_EQ(groups, want_groups);
  EXPECT_EQ(norm_lanes, 44);
  o.prefill_chunk = 0;
  const program::Program dp = compiler::compile(f.model.config, o);
  Sequence s;
  s.prompt = testing::random_ids(150, V, 31);
  s.max_new = 1;
  const int64_t n = int64_t(s.prompt.size()) - 1;
  CpuExecutor pre(pp, f.model), dec(dp, f.model);
  const RunResult pr = pre.run({s}, shuffled(7));
  EXPECT_EQ(pr.steps, 2);
  pre.copy_kv_to(dec, 0, 0, n);
  Sequence d = s;
  d.kv_filled = int32_t(n);
  RunOptions ro = shuffled(8);
  ro.capture_logits = true;
  const RunResult r = dec.run({d}, ro);
  ASSERT_EQ(r.seqs[0].logits.size(), size_t(V));
  reference::Forward ref(f.model, dp.h.max_context);
  const std::vector<float> want = ref.forward(s.prompt, true);
  EXPECT_LT(rel_err(r.seqs[0].logits.data(), &want[size_t(n) * V], size_t(V)), kLogitsTol);
}

INSTANTIATE_TEST_SUITE_P(Tokens, PrefillWide, ::testing::Values(0, 128));

// Target::prefill_attn_rows: kv_append / prefill_attention tasks of fewer
// lanes (3 here, an odd block and a short last one) than the default's; each
// lane attends alone in either, so every layer's K/V (which the layers before
// it attended to produce) are the default Program's to the bit.
TEST(Prefill, SmallerAttentionBlocksGiveTheSameKv) {
  const auto& f = fixture(testing::golden_fixture_names().front());
  Sequence s;
  s.prompt = f.golden.prompts[0].ids;
  s.prompt.insert(s.prompt.end(), f.golden.prompts[0].greedy.begin(), f.golden.prompts[0].greedy.end());
  s.max_new = 1;
  const int64_t n = int64_t(s.prompt.size()) - 1;
  ASSERT_GE(n, 8);
  const int T = 17;
  const program::Program base = compile_for(f.model, 3, T);
  compiler::CompileOptions o;
  o.workers = 3;
  o.prefill_chunk = T;
  o.max_context = int(std::min<int64_t>(128, f.model.config.max_position));
  o.page_size = 16;
  const int g = int(f.model.config.n_heads / f.model.config.n_kv_heads);
  o.target.prefill_attn_rows = 3 * g;  // 3 lanes
  const program::Program small = compiler::compile(f.model.config, o);
  program::check_or_throw(small, 3);
  auto widest = [](const program::Program& p, program::Opcode oc) {
    int32_t w = 0, n_tasks = 0;
    for (const program::TaskDesc& t : p.tasks)
      if (program::Opcode(t.opcode) == oc) w = std::max(w, t.b1 - t.b0), ++n_tasks;
    return std::pair{w, n_tasks};
  };
  const auto [w_small, n_small] = widest(small, program::Opcode::PrefillAttention);
  const auto [w_base, n_base] = widest(base, program::Opcode::PrefillAttention);
  EXPECT_EQ(w_small, 3);
  EXPECT_GT(w_base, 3);
  EXPECT_GT(n_small, n_base);
  EXPECT_EQ(widest(small, program::Opcode::KvAppend).first, 3);
  CpuExecutor a(base, f.model), b(small, f.model);
  a.run({s}, shuffled(1));
  b.run({s}, shuffled(2));
  EXPECT_EQ(worst_kv_err(a, b, n), 0.0);
}

TEST(Prefill, BadRequestsAreErrors) {
  const auto& f = fixture("stories260K");
  program::Program pp = compile_for(f.model, 3, 4);
  CpuExecutor pre(pp, f.model);
  Sequence s;
  s.prompt = {1, 2, 3, 4, 5};
  EXPECT_THROW(pre.run({s, s}, {}), Error);  // one sequence per prefill Program
  s.kv_filled = 5;
  EXPECT_THROW(pre.run({s}, {}), Error);  // kv_filled must leave the last prompt token
  s.kv_filled = 0;
  compiler::CompileOptions o;
  o.prefill_chunk = 4;
  o.batch = 3;
  EXPECT_THROW(compiler::compile(f.model.config, o), Error);
  o.batch = 1;
  o.max_context = 4;
  EXPECT_THROW(compiler::compile(f.model.config, o), Error);  // lanes must be below the context
  program::Program dp = compile_for(f.model, 3, 0);
  CpuExecutor dec(dp, f.model);
  s.kv_filled = 5;
  EXPECT_THROW(dec.run({s}, {}), Error);  // kv_filled must leave the last prompt token
  s.kv_filled = 0;
  s.kv_slot = 1;
  EXPECT_THROW(dec.run({s}, {}), Error);  // a decode run's sequence k uses slot k
  EXPECT_THROW(pre.run({s}, {}), Error);  // slot 1 of a one-sequence cache
  compiler::CompileOptions k = compiler::options_of(dp);
  k.prefill_chunk = 4;
  k.kv_sequences = 2;
  program::Program p2 = compiler::compile(f.model.config, k);
  EXPECT_THROW(CpuExecutor(p2, f.model, &dec), Error);  // 2 KV sequences against the decode Program's 1
}

// The backend path (run_prefilled): same tokens as decoding the prompt, greedy
// and sampled, one request and a batch of requests with ragged prompts.
TEST(Prefill, BackendGeneratesTheDecodePathsTokens) {
  const auto& f = fixture("stories260K");
  std::vector<engine::GenerateRequest> reqs;
  for (size_t pi = 0; pi < f.golden.prompts.size(); ++pi) {
    engine::GenerateRequest r;
    r.prompt = f.golden.prompts[pi].ids;
    r.prompt.insert(r.prompt.end(), f.golden.prompts[pi].greedy.begin(), f.golden.prompts[pi].greedy.begin() + 20 + 5 * pi);
    r.max_tokens = 16;
    if (pi == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_p = 0.9f;
      r.sampling.seed = 7;
    }
    reqs.push_back(r);
  }
  auto backend = [&](int chunk, int batch) {
    engine::CpuBackendOptions o;
    o.workers = 7;
    o.shuffle = true;
    o.shuffle_seed = 5;
    o.max_context = 128;
    o.batch = batch;
    o.prefill_chunk = chunk;
    return std::make_unique<engine::CpuBackend>(f.model, o);
  };
  auto plain = backend(0, 1);
  std::vector<std::vector<int32_t>> want;
  for (const auto& r : reqs) want.push_back(plain->generate(r, {}).output);
  for (int chunk : {8, 64}) {
    auto one = backend(chunk, 1);
    for (size_t i = 0; i < reqs.size(); ++i)
      EXPECT_EQ(one->generate(reqs[i], {}).output, want[i]) << "chunk " << chunk << " request " << i;
    auto batched = backend(chunk, 3);
    const auto out = batched->generate_batch(reqs, {});
    for (size_t i = 0; i < reqs.size(); ++i)
      EXPECT_EQ(out[i].output, want[i]) << "chunk " << chunk << " batch, request " << i;
  }
}

// The checker proves a prefill Program's dependencies: every wait removed
// from one (tiny-qwen3, 4 lanes, 7 workers) is caught, and removing one of
// the waits that order a lane's reads after the other lanes' appends of the
// same step gives a wrong K/V cache in shuffled runs.
TEST(Prefill, EveryRemovedWaitIsCaught) {
  const auto& f = fixture("tiny-qwen3");
  const program::Program p = compile_for(f.model, 7, 4);
  ASSERT_TRUE(program::check(p).ok);
  Sequence s;
  s.prompt = f.golden.prompts[2].ids;  // 33 tokens: 8 steps of 4 lanes
  CpuExecutor base(p, f.model);
  base.run({s}, shuffled(1));
  // Waits of the attention on counters the step's appends signal (KvAppend,
  // or the appending Attention chunks where the prompt lanes use chunks).
  std::vector<bool> appends_signal(p.h.n_counters, false);
  for (const program::TaskDesc& t : p.tasks)
    if (program::Opcode(t.opcode) == program::Opcode::KvAppend ||
        (program::Opcode(t.opcode) == program::Opcode::Attention &&
         t.arg[ops::AttentionOperands::kChunk] == t.arg[ops::AttentionOperands::kNChunks] - 1))
      for (uint32_t k = 0; k < t.signal_count; ++k) appends_signal[p.signals[t.signal_begin + k]] = true;
  int total = 0, caught = 0, in_step = 0, shown = 0;
  for (uint32_t w = 0; w < p.waits.size(); ++w) {
    program::Program q = p;
    q.waits.erase(q.waits.begin() + w);
    const program::TaskDesc* owner = nullptr;
    for (auto& t : q.tasks) {
      if (w >= t.wait_begin && w < t.wait_begin + t.wait_count) --t.wait_count, owner = &t;
      else if (t.wait_begin > w) --t.wait_begin;
    }
    q.h.n_waits = uint32_t(q.waits.size());
    ++total;
    caught += !program::check(q).ok;
    EXPECT_FALSE(program::check(q).ok) << "removing wait " << w << " went unnoticed";
    const bool is_in_step = owner &&
                            (program::Opcode(owner->opcode) == program::Opcode::Attention ||
                             program::Opcode(owner->opcode) == program::Opcode::PrefillAttention) &&
                            p.waits[w].offset == 1 && appends_signal[p.waits[w].counter] &&
                            // (PrefillAttention's output of the last layer reaches no K/V.)
                            (program::Opcode(owner->opcode) == program::Opcode::Attention ||
                             owner->layer + 1 < p.h.n_layers);
    if (!is_in_step || in_step >= 6) continue;
    ++in_step;
    CpuExecutor ex(q, f.model);
    double worst = 0;
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      RunOptions mo = shuffled(seed * 100 + w);
      mo.threads = 1;
      ex.run({s}, mo);
      worst = std::max(worst, worst_kv_err(ex, base, int64_t(s.prompt.size()) - 1));
    }
    shown += worst > 1e-3;
  }
  std::cout << "[ figures ] prefill mutation: " << caught << "/" << total << " removed waits caught by the checker, "
            << shown << "/" << in_step << " in-step attention waits shown wrong by shuffled runs\n";
  EXPECT_GT(in_step, 0);
  EXPECT_GE(shown * 10, in_step * 7);
}

// A chunk the context cannot hold is clamped to the context less one (a
// 24-token context: 23 lanes), not an error.
TEST(Prefill, ChunkAboveTheContextIsClamped) {
  const auto& f = fixture("stories260K");
  engine::GenerateRequest r;
  r.prompt = f.golden.prompts[0].ids;
  r.prompt.insert(r.prompt.end(), f.golden.prompts[0].greedy.begin(), f.golden.prompts[0].greedy.begin() + 15);
  r.max_tokens = 4;
  std::vector<int32_t> out[2];
  for (int chunk : {0, 64}) {
    engine::CpuBackendOptions o;
    o.workers = 3;
    o.max_context = 24;
    o.prefill_chunk = chunk;
    engine::CpuBackend be(f.model, o);
    out[chunk ? 1 : 0] = be.generate(r, {}).output;
  }
  EXPECT_EQ(out[1], out[0]);
  EXPECT_EQ(out[0].size(), 4u);
}

}  // namespace
}  // namespace keel::exec::cpu
