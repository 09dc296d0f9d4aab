// The opcode units (src/ops): for every unit in the one list, its info row and
// its operand view agree slot by slot, the view round-trips (from(to(v)) == v),
// and validation rejects a bad operand with a message naming the view's field.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "common/tiny_config.h"
#include "compiler/compiler.h"
#include "core/error.h"
#include "ops/ops.h"
#include "program/smem_plan.h"

namespace keel::ops {
namespace {

using program::kMaxArgs;
using program::kMaxOperands;

TEST(Ops, TableIsDerivedFromTheUnitsInOpcodeOrder) {
  ASSERT_EQ(int(kOpcodeTable.size()), program::kNumOpcodes);
  int seen = 0;
  for_each([&]<class Op>() {
    ++seen;
    EXPECT_EQ(int(Op::kOpcode), seen);
    EXPECT_EQ(opcode_info(Op::kOpcode).name, std::string(Op::kInfo.name));
    EXPECT_FALSE(std::string(Op::kInfo.name).empty());
    EXPECT_FALSE(std::string(Op::kInfo.does).empty()) << Op::kInfo.name;
    bool found = false;
    EXPECT_TRUE(visit(Op::kOpcode, [&]<class Other>() { found = std::is_same_v<Op, Other>; }));
    EXPECT_TRUE(found) << Op::kInfo.name;
  });
  EXPECT_EQ(seen, program::kNumOpcodes);
  EXPECT_FALSE(visit(program::Opcode(0), [&]<class>() {}));
  EXPECT_FALSE(visit(program::Opcode(program::kNumOpcodes + 1), [&]<class>() {}));
}

// A TaskDesc whose every slot holds a distinct value: the view reads some of
// them; written back into a fresh TaskDesc, exactly the slots the info row
// describes come back, each in its own place.
TEST(Ops, ViewsRoundTripAndCoverExactlyTheInfoRowsSlots) {
  for_each([&]<class Op>() {
    SCOPED_TRACE(Op::kInfo.name);
    TaskDesc src;
    for (int i = 0; i < kMaxOperands; ++i) src.buf[i] = 100 + i;
    for (int i = 0; i < kMaxArgs; ++i) src.arg[i] = 200 + i;
    const typename Op::Operands v = Op::Operands::from(src);
    TaskDesc dst;  // buf = -1, arg = 0
    v.to(dst);
    EXPECT_TRUE(Op::Operands::from(dst) == v);
    for (int i = 0; i < kMaxOperands; ++i) {
      const bool described = Op::kInfo.operands[i][0] != '\0';
      EXPECT_EQ(dst.buf[i], described ? 100 + i : -1) << "operand slot " << i << ": " << Op::kInfo.operands[i];
    }
    for (int i = 0; i < kMaxArgs; ++i) {
      const bool described = Op::kInfo.args[i][0] != '\0';
      EXPECT_EQ(dst.arg[i], described ? 200 + i : 0) << "argument slot " << i << ": " << Op::kInfo.args[i];
    }
    // And a view with other values survives to() then from() unchanged.
    typename Op::Operands w = Op::Operands::from(dst);
    TaskDesc again;
    w.to(again);
    EXPECT_TRUE(Op::Operands::from(again) == w);
  });
}

// Breaks one operand of the first task of opcode Op (through its view) and
// expects validation to fail with a message naming `field`.
template <class Op, class Edit>
void expect_rejected(const program::Program& good, Edit edit, const std::string& field) {
  program::Program p = good;
  TaskDesc* t = nullptr;
  for (TaskDesc& x : p.tasks)
    if (program::Opcode(x.opcode) == Op::kOpcode) {
      t = &x;
      break;
    }
  ASSERT_NE(t, nullptr) << Op::kInfo.name;
  typename Op::Operands v = Op::Operands::from(*t);
  edit(p, v);
  v.to(*t);
  try {
    p.validate();
    ADD_FAILURE() << Op::kInfo.name << ": a bad " << field << " was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(std::string(Op::kInfo.name)), std::string::npos) << msg;
    EXPECT_NE(msg.find("operand " + field), std::string::npos) << msg;
  }
}

TEST(Ops, ValidationNamesTheBadOperand) {
  compiler::CompileOptions o;
  o.workers = 5;
  o.batch = 2;
  o.max_context = 64;
  o.page_size = 16;
  const program::Program p = compiler::compile(testing::tiny_config(model::Arch::Qwen3), o);
  ASSERT_NO_THROW(p.validate());
  // A weight operand naming an activation, a missing weight, a KV operand
  // naming the qkv activation, well-known buffers swapped.
  expect_rejected<QkvProj>(p, [](const program::Program& q, QkvProjOperands& v) { v.weight = q.h.buf_x; }, "weight");
  expect_rejected<GateUp>(p, [](const program::Program&, GateUpOperands& v) { v.up_w = -1; }, "up_w");
  expect_rejected<Attention>(p, [](const program::Program&, AttentionOperands& v) { v.v_cache = v.qkv; }, "v_cache");
  expect_rejected<Attention>(p, [](const program::Program&, AttentionOperands& v) { v.partial = v.out; }, "partial");
  expect_rejected<MatvecResidual>(p, [](const program::Program& q, MatvecResidualOperands& v) { v.x = q.h.buf_logits; },
                                  "x");
  expect_rejected<LmHead>(p, [](const program::Program& q, LmHeadOperands& v) { v.argmax = q.h.buf_logits; }, "argmax");
  expect_rejected<Step>(p, [](const program::Program& q, StepOperands& v) { v.ring = q.h.buf_tokens; }, "ring");
}

// attention_positions: over every position, chunk count and window, the C
// chunks' ranges are disjoint, in order, and together exactly the window
// [max(0, pos - window + 1), pos] (every position when not flagged); the last
// chunk still covers pos (it appends K/V there), and chunks wholly before the
// window are empty.
/// An Attention task of chunk ch of C (its view's other fields zero).
program::TaskDesc chunk_task(int32_t ch, int32_t C, bool sliding_window) {
  program::TaskDesc t;
  AttentionOperands v;
  v.chunk = ch;
  v.n_chunks = C;
  v.to(t);
  if (sliding_window) t.flags |= program::kFlagSlidingWindow;
  return t;
}

// Every position in the window is attended by exactly one chunk, in chunk
// order, the last chunk covers pos (it appends) and no other does; with a
// minimum chunk length (attn_even_range) the chunks with work are the last
// ceil((pos + 1) / L) (at most C), of even lengths.
TEST(Ops, AttentionPositionsCoverExactlyTheWindow) {
  program::ProgramHeader h;
  for (int32_t min_chunk : {0, 1, 4, 16})
  for (int32_t window : {0, 1, 5, 17}) {
    h.sliding_window = window;
    h.attn_min_chunk = min_chunk;
    for (int32_t C : {1, 2, 5, 9})
      for (int64_t pos = 0; pos < 60; ++pos) {
        SCOPED_TRACE(::testing::Message() << "window " << window << " C " << C << " pos " << pos << " min chunk "
                                          << min_chunk);
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
        int64_t next = lo, covered = 0, with_work = 0, shortest = INT64_MAX, longest = 0;
        for (int32_t ch = 0; ch < C; ++ch) {
          const program::TaskDesc t = chunk_task(ch, C, window > 0);
          int64_t p0 = -1, p1 = -1;
          attention_positions(h, t, pos, &p0, &p1);
          ASSERT_LE(p0, p1);
          if (ch < C - 1) {
            EXPECT_LE(p1, pos) << "only the last chunk covers pos";
          }
          if (window == 0 && min_chunk > 0 && p1 > p0) {
            ++with_work;
            shortest = std::min(shortest, p1 - p0), longest = std::max(longest, p1 - p0);
          }
          if (p0 == p1) continue;  // empty (before the window, or an empty split)
          EXPECT_EQ(p0, next);
          next = p1;
          covered += p1 - p0;
          if (ch == C - 1) {
            EXPECT_EQ(p1, pos + 1);
          }
        }
        EXPECT_EQ(next, pos + 1);
        EXPECT_EQ(covered, pos + 1 - lo);
        if (window == 0 && min_chunk > 0) {
          EXPECT_EQ(with_work, std::clamp<int64_t>((pos + min_chunk) / min_chunk, 1, C));
          EXPECT_LE(longest - shortest, 1);
        }
      }
  }
}

// Attention::streams says a launch takes the long-context kernel exactly when
// some chunk's earlier positions, at the launch's last position, outnumber
// kStreamFactor times what the prefetch holds (attn_prefetch_room), checked
// against a direct count over attention_positions.
TEST(Ops, AttentionStreamsWhenAChunkOutgrowsItsPrefetch) {
  program::ProgramHeader h;
  h.n_heads = 32;
  h.n_kv_heads = 8;
  h.head_dim = 64;
  h.page_size = 64;
  h.target.work_bytes = 27648;
  const int64_t room = attn_prefetch_room(h.target.work_bytes, attn_kv_offset(h), h.head_dim);
  EXPECT_EQ(attn_kv_offset(h), 4 * 64 * 4 + 16);
  EXPECT_EQ(room, (27648 - (4 * 64 * 4 + 16) - 4 * 64) / (4 * 64));
  for (int32_t min_chunk : {0, 20, 200})
  for (int32_t C : {1, 2, 16}) {
    h.n_chunks = C;
    h.attn_min_chunk = min_chunk;
    for (int64_t end : {int64_t(2), room, 2 * room + 1, 2 * room + 2, 30 * room + 1, 30 * room + 2, int64_t(40000)}) {
      SCOPED_TRACE(::testing::Message() << "C " << C << " end " << end << " min chunk " << min_chunk);
      int64_t longest = 0;  // earlier positions (< pos) of one chunk, over the launch's positions
      for (int64_t pos = 0; pos < end; ++pos)
        for (int32_t ch = 0; ch < C; ++ch) {
          int64_t p0 = 0, p1 = 0;
          attention_positions(h, chunk_task(ch, C, false), pos, &p0, &p1);
          longest = std::max(longest, std::min(p1, pos) - p0);
        }
      // Exact without a minimum length, a bound at most one above with one.
      const int64_t bound = program::attn_longest_history(end - 1, C, min_chunk);
      EXPECT_GE(bound, longest);
      EXPECT_LE(bound, longest + (min_chunk > 0 ? 1 : 0));
      EXPECT_EQ(Attention::streams(h, end), bound > Attention::kStreamFactor * room);
    }
  }
  h.attn_min_chunk = 0;
  h.n_chunks = 1;
  h.page_size = 12;  // blocks of 8 positions would straddle pages: never streams
  EXPECT_FALSE(Attention::streams(h, 40000));
  h.page_size = 64;
  h.head_dim = 256;  // not a streamed shape
  EXPECT_FALSE(Attention::streams(h, 40000));
}

// With attn_stream's K/V staging buffer in the work area (a Program that
// program::attn_may_stream reserves it for), any chunk past
// kAttnStreamMinHistory earlier positions streams; one byte short of it, the
// factor over the prefetch's room decides as before.
TEST(Ops, AttentionStreamsPastTheMinimumWithTheStagingBuffer) {
  program::ProgramHeader h;
  h.n_heads = 32;
  h.n_kv_heads = 8;
  h.head_dim = 128;
  h.page_size = 64;
  h.n_chunks = 1;  // one chunk: its history at the last position is end - 1
  const int64_t end_of_buffer = program::attn_stream_buf_end(128, 4);
  h.target.work_bytes = uint32_t(end_of_buffer);
  EXPECT_FALSE(Attention::streams(h, program::kAttnStreamMinHistory + 1));
  EXPECT_TRUE(Attention::streams(h, program::kAttnStreamMinHistory + 2));
  h.target.work_bytes = uint32_t(end_of_buffer - 1);
  const int64_t room = attn_prefetch_room(h.target.work_bytes, attn_kv_offset(h), h.head_dim);
  EXPECT_FALSE(Attention::streams(h, Attention::kStreamFactor * room + 1));
  EXPECT_TRUE(Attention::streams(h, Attention::kStreamFactor * room + 2));
}

}  // namespace
}  // namespace keel::ops
