// Mixed Programs on the CPU executor (ProgramHeader::decode_lanes): decode
// lanes and a prefill group in one step, in shuffle mode, for every golden
// fixture:
//  * mixed Programs compile, validate and pass the symbolic checker;
//  * two sequences decode while a third's prompt is prefilled beside them (a
//    run that stops when the prefill is through: RunOptions::max_steps), then
//    all three decode on a decode Program sharing the cache: every sequence's
//    tokens equal those of the plain decode path (each prompt run one
//    position a step), and the prefilled K/V equal the decode path's;
//  * bad lane assignments are errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>

#include "common/kv_compare.h"
#include "common/run_options.h"
#include "compiler/compiler.h"
#include "exec/common/launch_state.h"
#include "exec/common/prefill.h"
#include "exec/cpu/executor.h"
#include "program/checker.h"
#include "reference/golden.h"

namespace keel::exec::cpu {
namespace {

using testing::shuffled;

constexpr int kDecodeLanes = 3, kChunk = 5, kPageSize = 16, kContext = 128;
constexpr int kPagesPerSeq = kContext / kPageSize;
constexpr int kPages = 5 * kPagesPerSeq;  // three sequences' pages, spares, an idle page

program::Program compile_for(const model::Model& m, int decode_lanes, int prefill_chunk, int batch) {
  compiler::CompileOptions o;
  o.workers = 4;
  o.batch = batch;
  o.decode_lanes = decode_lanes;
  o.prefill_chunk = prefill_chunk;
  o.max_context = kContext;
  o.page_size = kPageSize;
  o.kv_pages = kPages;
  return compiler::compile(m.config, o);
}

std::vector<int32_t> pages_of(int seq) {
  std::vector<int32_t> p(kPagesPerSeq);
  std::iota(p.begin(), p.end(), seq * kPagesPerSeq);
  return p;
}

using testing::worst_kv_err;

class Mixed_ : public ::testing::TestWithParam<std::string> {};

TEST_P(Mixed_, PrefillBesideDecodingGivesTheDecodePathsTokens) {
  const auto& f = testing::loaded_fixture(GetParam());
  const program::Program dp = compile_for(f.model, 0, 0, kDecodeLanes);
  const program::Program mp = compile_for(f.model, kDecodeLanes, kChunk, 1);
  ASSERT_EQ(mp.h.batch, kDecodeLanes + kChunk);
  ASSERT_EQ(mp.h.decode_lanes, kDecodeLanes);
  ASSERT_EQ(mp.h.seq_lanes, kChunk);
  ASSERT_GT(mp.h.n_lm_tiles, 0);
  ASSERT_GE(mp.h.n_chunks, 2);
  EXPECT_EQ(program::n_decode_lanes(mp.h), kDecodeLanes);
  EXPECT_EQ(program::n_lane_sequences(mp.h), kDecodeLanes + 1);
  for (const program::TaskDesc& t : mp.tasks) {  // the LM head serves the decode lanes alone
    if (program::Opcode(t.opcode) == program::Opcode::LmHead) {
      EXPECT_EQ(t.b1, kDecodeLanes);
    }
  }
  program::check_or_throw(mp, 3);
  EXPECT_EQ(compiler::options_of(mp).decode_lanes, kDecodeLanes);

  // Two short prompts decode; a long one (a prompt and its greedy tokens) is prefilled.
  std::vector<Sequence> seqs(3);
  const auto& gp = f.golden.prompts;
  for (int k = 0; k < 3; ++k) {
    seqs[size_t(k)].prompt = gp[size_t(k) % gp.size()].ids;
    seqs[size_t(k)].max_new = 12;
    seqs[size_t(k)].pages = pages_of(k);
  }
  Sequence& x = seqs[2];
  x.prompt.insert(x.prompt.end(), gp[2].greedy.begin(), gp[2].greedy.begin() + 20);
  x.max_new = 8;
  seqs[1].sampling.temperature = 0.8f;  // one sampled sequence: its draws go on across the two runs
  seqs[1].sampling.top_p = 0.9f;
  seqs[1].sampling.seed = 11;
  const int64_t n = int64_t(x.prompt.size()) - 1;  // positions the prefill writes

  // The plain decode path: all three from their first position.
  CpuExecutor plain(dp, f.model);
  const RunResult want = plain.run(seqs, shuffled(1));

  CpuExecutor dec(dp, f.model), mix(mp, f.model, &dec);
  ASSERT_TRUE(mix.shares_kv_with(dec));
  for (uint64_t seed : {2, 3}) {
    std::vector<Sequence> s = seqs;
    s[2].prefill_only = true;
    RunOptions ro = shuffled(seed);
    ro.idle_page = kPages - 1;  // the third decode lane idles
    ro.max_steps = int((n + kChunk - 1) / kChunk);
    const RunResult r1 = mix.run(s, ro);
    EXPECT_EQ(r1.steps, ro.max_steps);
    ASSERT_EQ(r1.seqs.size(), 3u);
    EXPECT_TRUE(r1.seqs[2].tokens.empty());
    EXPECT_FALSE(r1.seqs[0].tokens.empty()) << "a sequence decoded while the prompt was prefilled";
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(r1.seqs[size_t(k)].stop, program::StopReason::None) << "stopped by max_steps";
      continue_sequence(s[size_t(k)], r1.seqs[size_t(k)].tokens, r1.steps);
    }
    EXPECT_LT(worst_kv_err(dec, plain, x.pages, n), 3e-2) << GetParam() << ": the prefilled K/V";
    s[2].prefill_only = false;
    s[2].kv_filled = int32_t(n);
    RunOptions r2o = shuffled(seed + 10);
    const RunResult r2 = dec.run(s, r2o);
    for (int k = 0; k < 3; ++k) {
      std::vector<int32_t> got = k < 2 ? r1.seqs[size_t(k)].tokens : std::vector<int32_t>{};
      got.insert(got.end(), r2.seqs[size_t(k)].tokens.begin(), r2.seqs[size_t(k)].tokens.end());
      EXPECT_EQ(got, want.seqs[size_t(k)].tokens) << GetParam() << " sequence " << k << " seed " << seed;
      EXPECT_EQ(r2.seqs[size_t(k)].stop, want.seqs[size_t(k)].stop);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, Mixed_, ::testing::ValuesIn(testing::golden_fixture_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string m = i.param;
                           std::replace(m.begin(), m.end(), '-', '_');
                           return m;
                         });

// The checker proves a mixed Program's dependencies: every wait removed from
// one (tiny-qwen3: 2 decode lanes, 4 prefill lanes, 4 workers) is caught.
TEST(Mixed, EveryRemovedWaitIsCaught) {
  const auto& f = testing::loaded_fixture("tiny-qwen3");
  const program::Program p = compile_for(f.model, 2, 4, 1);
  ASSERT_TRUE(program::check(p).ok);
  int missed = 0;
  for (uint32_t w = 0; w < p.waits.size(); ++w) {
    program::Program q = p;
    q.waits.erase(q.waits.begin() + w);
    for (auto& t : q.tasks) {
      if (w >= t.wait_begin && w < t.wait_begin + t.wait_count) --t.wait_count;
      else if (t.wait_begin > w) --t.wait_begin;
    }
    q.h.n_waits = uint32_t(q.waits.size());
    if (program::check(q).ok) ++missed;
  }
  EXPECT_EQ(missed, 0) << "of " << p.waits.size() << " waits";
}

// The launch state written buffer by buffer (what the CUDA executor uploads)
// asks only for launch_state_buffers and, over a zeroed workspace with its
// activations at 0xff, gives the whole-image version's bytes (a mixed
// Program: decode, idle and prefill lanes).
TEST(LaunchState, BufferByBufferEqualsTheWholeImage) {
  const auto& f = testing::loaded_fixture("tiny-qwen3");
  const program::Program mp = compile_for(f.model, 3, 5, 1);
  const auto& h = mp.h;
  std::vector<Sequence> seqs(2);
  seqs[0].prompt = {1, 2, 3};
  seqs[0].pages = pages_of(0);
  seqs[1].prompt = std::vector<int32_t>(30, 7);
  seqs[1].kv_filled = 4;
  seqs[1].pages = pages_of(1);
  seqs[1].prefill_only = true;
  RunOptions ro;
  ro.idle_page = kPages - 1;
  ro.eos_ids = {2};
  ro.max_steps = 3;
  auto embed = [&](int32_t tok, float* row) {
    for (int64_t i = 0; i < h.hidden; ++i) row[i] = float(tok) + 0.001f * float(i);
  };
  std::vector<uint8_t> whole(h.workspace_bytes);
  write_launch_state(mp, seqs, ro, whole.data(), embed, "test");
  std::vector<uint8_t> parts(h.workspace_bytes, 0);
  for (const program::BufferDesc& b : mp.buffers)
    if (program::BufferKind(b.kind) == program::BufferKind::Activation)
      std::fill_n(parts.begin() + std::ptrdiff_t(b.offset), b.count * dtype_size(DType(b.dtype)), uint8_t(0xff));
  const std::vector<int32_t> allowed = launch_state_buffers(h);
  std::vector<int32_t> asked;
  write_launch_state(
      mp, seqs, ro,
      [&](int32_t id) {
        asked.push_back(id);
        return parts.data() + mp.buffer(id).offset;
      },
      embed, "test");
  for (int32_t id : asked) EXPECT_NE(std::find(allowed.begin(), allowed.end(), id), allowed.end()) << "buffer " << id;
  EXPECT_TRUE(parts == whole);
}

TEST(Mixed, BadLanesAreErrors) {
  const auto& f = testing::loaded_fixture("stories260K");
  compiler::CompileOptions o;
  o.workers = 3;
  o.decode_lanes = 2;
  EXPECT_THROW(compiler::compile(f.model.config, o), Error);  // decode lanes need prefill lanes
  o.prefill_chunk = 4;
  o.batch = 4;
  EXPECT_THROW(compiler::compile(f.model.config, o), Error);  // batch is 2 + 4
  const program::Program dp = compile_for(f.model, 0, 0, 2);
  const program::Program mp = compile_for(f.model, 2, 4, 1);
  CpuExecutor dec(dp, f.model), mix(mp, f.model, &dec);
  Sequence d, p;
  d.prompt = {1, 2, 3};
  d.pages = pages_of(0);
  p = d;
  p.pages = pages_of(1);
  p.prefill_only = true;
  RunOptions ro;
  ro.idle_page = kPages - 1;
  EXPECT_THROW(dec.run({d, p}, ro), Error);     // a decode Program has no prefill lanes
  EXPECT_THROW(mix.run({p, d}, ro), Error);     // decoding sequences come first
  EXPECT_THROW(mix.run({d, p, p}, ro), Error);  // one prefill group
  Sequence d2 = d, d3 = d;
  d2.pages = pages_of(2);
  d3.pages = pages_of(3);
  EXPECT_THROW(mix.run({d, d2, d3}, ro), Error);  // two decode lanes
  ro.max_steps = -1;
  EXPECT_THROW(mix.run({d, p}, ro), Error);
  ro.max_steps = 0;
  const RunResult r = mix.run({d, p}, ro);  // a prefill group and a decoding sequence, to the end
  EXPECT_EQ(r.seqs[0].tokens.size(), 16u);
  EXPECT_TRUE(r.seqs[1].tokens.empty());
}

}  // namespace
}  // namespace keel::exec::cpu
