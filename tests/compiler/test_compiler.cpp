// The compiler, pass by pass (fuse, buffers, partition, dependencies,
// placement), the checker, serialization, reports, option errors, and the
// Qwen3-8B @ 132 workers balance (bytes per worker max/mean <= 1.05).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <set>

#include "program/checker.h"
#include "program/access_map.h"
#include "program/interval_map.h"
#include "compiler/compiler.h"
#include "compiler/fuse.h"
#include "compiler/passes.h"
#include "compiler/report.h"
#include "program/serialize.h"
#include "common/tiny_config.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "model/config.h"

namespace keel::compiler {
using namespace program;
namespace {

model::ModelConfig tiny(model::Arch a) { return testing::tiny_config(a); }

model::ModelConfig shared_config(const std::string& rel) {
  return model::ModelConfig::load(path_join(KEEL_SHARED_DIR, rel));
}

CompileOptions opts(int w, int b, int ctx = 128) {
  CompileOptions o;
  o.workers = w;
  o.batch = b;
  o.max_context = ctx;
  o.page_size = 16;
  return o;
}

std::string op_name(const Program& p, const TaskDesc& t) { return p.ops[t.op].name; }

// --- the interval map of the dependency pass and the checker ---------------------

// cover() visits exactly the segments of [lo, hi) in order: a segment that
// straddles lo or hi is split there (both halves keep its payload), gaps get
// fresh segments, and the rest of the map is left as it was.
TEST(IntervalMap, CoverSplitsAtTheEndsAndFillsGaps) {
  struct Seg {
    uint64_t hi = 0;
    std::vector<int> marks;
  };
  IntervalMap<Seg> m;
  auto mark = [&](uint64_t lo, uint64_t hi, int id) {
    std::vector<std::pair<uint64_t, uint64_t>> seen;
    m.cover(lo, hi, [&](uint64_t at, Seg& s) {
      seen.push_back({at, s.hi});
      s.marks.push_back(id);
    });
    return seen;
  };
  using V = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(mark(10, 20, 1), (V{{10, 20}}));                       // a gap: one fresh segment
  EXPECT_EQ(mark(15, 30, 2), (V{{15, 20}, {20, 30}}));             // split at 15, a gap after 20
  EXPECT_EQ(mark(5, 12, 3), (V{{5, 10}, {10, 12}}));               // a gap before, split at 12
  EXPECT_EQ(mark(12, 15, 4), (V{{12, 15}}));                       // exactly one segment
  EXPECT_EQ(mark(17, 18, 5), (V{{17, 18}}));                       // inside one segment: split at both ends
  EXPECT_EQ(mark(0, 40, 6),
            (V{{0, 5}, {5, 10}, {10, 12}, {12, 15}, {15, 17}, {17, 18}, {18, 20}, {20, 30}, {30, 40}}));
  EXPECT_TRUE(mark(7, 7, 7).empty());                               // an empty range visits nothing
  // The payloads: each piece remembers every access that covered it.
  std::vector<std::vector<int>> marks;
  m.cover(0, 40, [&](uint64_t, Seg& s) { marks.push_back(s.marks); });
  const std::vector<std::vector<int>> want = {{6}, {3, 6}, {1, 3, 6}, {1, 4, 6}, {1, 2, 6},
                                              {1, 2, 5, 6}, {1, 2, 6}, {2, 6}, {6}};
  EXPECT_EQ(marks, want);
}

// AccessMap visits, for any access, exactly the places a byte map would, with
// the same history: buffers on the same bytes with other row geometries (the
// memory plan's reuse) included. Random buffers that alias in every way (same
// offset and shape, other pitch, a shifted start, one row) and random accesses
// (blocks of rows, plain byte ranges) to the buffers marked accessed: each
// access collects the last writers of the places it covers and becomes their
// writer; the reference does the same per byte. The sets must agree.
TEST(AccessMap, SameProducersAsAByteMap) {
  struct Seg {
    uint64_t hi = 0;
    int writer = -1;
  };
  std::mt19937 rng(12345);
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE(cat("round ", round));
    Program p;
    struct Shape {
      uint64_t offset, rows, cols;
      DType dt;
    };
    std::vector<Shape> shapes;
    const int nb = 2 + int(rng() % 5);
    for (int i = 0; i < nb; ++i) {
      const DType dt = rng() % 2 ? DType::BF16 : DType::F32;
      const uint64_t rows = 1 + rng() % 6, cols = 1 + rng() % 12;
      uint64_t offset = (rng() % 24) * 2;  // even: both dtypes' elements stay whole in other grids' messages
      if (i > 0 && rng() % 3 == 0) offset = shapes[rng() % i].offset;  // the same start as another buffer
      shapes.push_back({offset, rows, cols, dt});
      BufferDesc d;
      std::snprintf(d.name, sizeof d.name, "b%d", i);
      d.kind = uint8_t(rng() % 2 ? BufferKind::Activation : BufferKind::State);
      d.dtype = uint8_t(dt);
      d.offset = offset;
      d.count = rows * cols;
      d.rows = int64_t(rows);
      d.cols = int64_t(cols);
      p.buffers.push_back(d);
    }
    if (round % 4 == 0) p.buffers.push_back(p.buffers[0]);  // an identical twin: one shared grid
    // Some buffers no task touches: their grids are left out, and the others
    // must not miss any history for it.
    std::vector<uint8_t> accessed(p.buffers.size(), 1);
    std::vector<int32_t> touched;
    for (size_t i = 0; i < accessed.size(); ++i) {
      if (i > 0 && rng() % 4 == 0) accessed[i] = 0;
      if (accessed[i]) touched.push_back(int32_t(i));
    }
    AccessMap<Seg> m(p, accessed);
    std::vector<int> last(512, -1);  // the byte map
    for (int k = 0; k < 300; ++k) {
      const int32_t bi = touched[rng() % touched.size()];
      const BufferDesc& b = p.buffers[size_t(bi)];
      const uint64_t es = dtype_size(DType(b.dtype));
      Access a;
      a.buffer = bi;
      a.mode = AccessMode::Write;
      if (rng() % 2) {  // a block of rows
        const uint64_t r0 = rng() % uint64_t(b.rows), r1 = r0 + 1 + rng() % (uint64_t(b.rows) - r0);
        const uint64_t c0 = rng() % uint64_t(b.cols), c1 = c0 + 1 + rng() % (uint64_t(b.cols) - c0);
        a.lo = b.offset + (r0 * uint64_t(b.cols) + c0) * es;
        a.hi = b.offset + (r0 * uint64_t(b.cols) + c1) * es;
        a.nrows = uint32_t(r1 - r0);
        a.pitch = uint64_t(b.cols) * es;
      } else {  // elements [e0, e1) of the whole buffer
        const uint64_t e0 = rng() % b.count, e1 = e0 + 1 + rng() % (b.count - e0);
        a.lo = b.offset + e0 * es;
        a.hi = b.offset + e1 * es;
      }
      std::set<int> want, got;
      for (uint64_t r = 0; r < a.nrows; ++r)
        for (uint64_t x = a.lo + r * a.pitch; x < a.hi + r * a.pitch; ++x) {
          if (last[x] >= 0) want.insert(last[x]);
          last[x] = k;
        }
      uint64_t visited = 0;
      m.cover(a, [&](Seg& sg, const Access& piece) {
        if (sg.writer >= 0) got.insert(sg.writer);
        sg.writer = k;
        visited += (piece.hi - piece.lo) * piece.nrows;
      });
      EXPECT_EQ(got, want) << "access " << k << ": " << describe_access(p, a);
      EXPECT_GE(visited, (a.hi - a.lo) * a.nrows);  // every byte at least once (its own grid)
    }
  }
}

// --- fuse ---------------------------------------------------------------------

TEST(Fuse, EachFamilyBecomesFiveOpsPerLayer) {
  for (auto a : {model::Arch::Llama, model::Arch::Qwen2, model::Arch::Qwen3}) {
    graph::Graph f = fuse(graph::build_decode_graph(tiny(a), 1));
    using K = graph::OpKind;
    std::vector<K> want;
    for (int l = 0; l < 2; ++l)
      want.insert(want.end(), {kFusedQkv, K::Attention, kMatvecResidual, kFusedGateUp, kMatvecResidual});
    want.insert(want.end(), {kFusedLmHead, K::Step});
    ASSERT_EQ(f.ops.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(f.ops[i].kind, want[i]) << i;
    // The projection writes the raw [q; k; v] rows; the head norms, RoPE and
    // the KV append moved to the attention.
    const graph::Op& qkv = f.ops[0];
    EXPECT_EQ(qkv.weight("q_bias").empty(), a != model::Arch::Qwen2);
    EXPECT_EQ(qkv.weight("v_bias").empty(), a != model::Arch::Qwen2);
    EXPECT_TRUE(qkv.weight("k_head_norm").empty());
    EXPECT_EQ(qkv.outputs, std::vector<std::string>{"qkv.0"});
    EXPECT_EQ(f.tensor("qkv.0").cols, 4 * 16 + 2 * 2 * 16);
    EXPECT_EQ(f.tensor("qkv.0").dtype, DType::BF16);
    const graph::Op& at = f.ops[1];
    EXPECT_EQ(at.inputs, (std::vector<std::string>{"qkv.0", "k_cache.0", "v_cache.0", "state"}));
    EXPECT_EQ(at.outputs, (std::vector<std::string>{"attn.0", "k_cache.0", "v_cache.0"}));
    EXPECT_EQ(at.weight("q_head_norm").empty(), a != model::Arch::Qwen3);
    EXPECT_EQ(at.weight("k_head_norm").empty(), a != model::Arch::Qwen3);
    EXPECT_EQ(f.ops[2].name, "o_proj");
    EXPECT_EQ(f.ops[2].inputs, (std::vector<std::string>{"attn.0", "x"}));
    EXPECT_EQ(f.ops[4].outputs, std::vector<std::string>{"x"});
  }
}

TEST(Fuse, UnropedKIsAnError) {
  // The attention task always applies RoPE to k, so a graph without it must not fuse.
  graph::Graph g = graph::build_decode_graph(tiny(model::Arch::Llama), 1);
  auto it = std::find_if(g.ops.begin(), g.ops.end(), [](const graph::Op& o) { return o.name == "k_rope"; });
  g.ops.erase(it);
  try {
    fuse(g);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("roped"), std::string::npos) << e.what();
  }
}

TEST(Fuse, UnfusableGraphIsAnError) {
  graph::Graph g = graph::build_decode_graph(tiny(model::Arch::Llama), 1);
  // A gate projection that feeds nothing but a second residual add.
  auto it = std::find_if(g.ops.begin(), g.ops.end(), [](const graph::Op& o) { return o.kind == graph::OpKind::SiluMul; });
  g.ops.erase(it);
  try {
    fuse(g);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gate_proj"), std::string::npos) << e.what();
  }
}

// The minimum attention chunk (attn_even_range): off unless given, never in
// prefill, mixed or batch-1 Programs (the CUDA decode kernels
// leave the even ranges out); a given value holds for any decode Program of
// several sequences; options_of keeps what was given, so a recompile is the
// same Program; a batch-1 Program compiled by default keeps the former
// reserved words' zeros.
TEST(Compile, AttentionMinimumChunkRule) {
  const model::ModelConfig c = tiny(model::Arch::Qwen3);
  auto min_of = [&](int batch, int given, int prefill = 0, int decode_lanes = 0) {
    CompileOptions o = opts(7, batch);
    o.attn_min_chunk = given;
    o.prefill_chunk = prefill;
    o.decode_lanes = decode_lanes;
    if (prefill > 1) o.batch = 1;
    const Program p = compile(c, o);
    EXPECT_EQ(program_hash(compile(c, options_of(p))), program_hash(p)) << "batch " << batch << " given " << given;
    return p.h.attn_min_chunk;
  };
  EXPECT_EQ(min_of(1, -1), 0);
  EXPECT_EQ(min_of(4, -1), 0);
  EXPECT_EQ(min_of(8, -1), 0);
  EXPECT_EQ(min_of(64, -1), 0);
  EXPECT_EQ(min_of(8, 0), 0);
  EXPECT_EQ(min_of(1, 300), 0);  // batch 1: never
  EXPECT_EQ(min_of(2, 300), 300);
  EXPECT_EQ(min_of(8, 300), 300);
  EXPECT_EQ(min_of(1, -1, 16), 0);      // a prefill Program
  EXPECT_EQ(min_of(1, 300, 16, 4), 0);  // a mixed one
  const Program one = compile(c, opts(7, 1));
  EXPECT_EQ(one.h.attn_min_chunk, 0);
  EXPECT_EQ(one.h.opt_attn_min_chunk, 0);
  CompileOptions bad = opts(7, 8);
  bad.attn_min_chunk = -2;
  EXPECT_THROW(compile(c, bad), Error);
}

// --- buffers & partition --------------------------------------------------------

// The KV arena: pages_per_seq x the batch by default; kv_sequences or
// kv_pages (any count of at least one sequence's pages, for an allocator)
// set it; options_of gives the same Program back.
TEST(Buffers, KvPagesSizeTheArena) {
  const model::ModelConfig c = tiny(model::Arch::Qwen3);
  Program p = compile(c, opts(7, 3));  // 128 / 16 = 8 pages a sequence
  EXPECT_EQ(p.h.pages_per_seq, 8);
  EXPECT_EQ(p.h.n_pages, 24);
  CompileOptions o = opts(7, 3);
  o.kv_pages = 13;
  Program q = compile(c, o);
  EXPECT_EQ(q.h.n_pages, 13);
  const uint64_t page = uint64_t(c.n_kv_heads) * 16 * uint64_t(c.head_dim);
  EXPECT_EQ(q.buffer(q.find_buffer("k_cache.0")).count, 13 * page);
  EXPECT_EQ(options_of(q).kv_pages, 13);
  EXPECT_EQ(compile(c, options_of(q)).h.n_pages, 13);
  o.kv_pages = 16;  // a multiple: the same as two KV sequences
  EXPECT_EQ(compile(c, options_of(compile(c, o))).h.n_pages, 16);
  o.kv_pages = 7;  // less than one sequence's pages
  EXPECT_THROW(compile(c, o), Error);
  o.kv_pages = 13;
  o.kv_sequences = 2;
  EXPECT_THROW(compile(c, o), Error);
}

// Attention partials exist where Attention tasks run: decode and mixed
// Programs, not a prefill Program whose lanes all attend with
// PrefillAttention (tiny Qwen3's head_dim 16 is one it serves).
TEST(Buffers, PrefillProgramsHoldNoAttentionPartials) {
  const model::ModelConfig c = tiny(model::Arch::Qwen3);
  auto has_part = [&](int batch, int prefill, int decode_lanes) {
    CompileOptions o = opts(7, batch);
    o.prefill_chunk = prefill;
    o.decode_lanes = decode_lanes;
    const Program p = compile(c, o);
    bool any = false;
    for (int l = 0; l < c.n_layers; ++l) any = any || p.find_buffer(cat("attn_part.", l)) >= 0;
    return any;
  };
  EXPECT_TRUE(has_part(3, 0, 0));   // decode
  EXPECT_FALSE(has_part(1, 8, 0));  // prefill
  EXPECT_TRUE(has_part(1, 8, 3));   // mixed: its decode lanes' chunks
}

TEST(Buffers, LayersShareActivationBytesAndLiveOnesDoNot) {
  Program p = compile(tiny(model::Arch::Qwen3), opts(7, 3));
  const BufferDesc& q0 = p.buffer(p.find_buffer("qkv.0"));
  const BufferDesc& q1 = p.buffer(p.find_buffer("qkv.1"));
  EXPECT_EQ(q0.offset, q1.offset);  // layer 1 reuses layer 0's bytes
  EXPECT_EQ(q0.count, uint64_t(3 * (4 + 2 * 2) * 16));  // B x [q; k; v], bf16
  EXPECT_EQ(DType(q0.dtype), DType::BF16);
  for (int l = 0; l < 2; ++l) {
    std::vector<const BufferDesc*> live;
    for (const char* n : {"qkv.", "attn_part.", "attn.", "h."}) live.push_back(&p.buffer(p.find_buffer(cat(n, l))));
    for (const BufferDesc& s : p.buffers)
      if (BufferKind(s.kind) == BufferKind::State) live.push_back(&s);
    for (size_t i = 0; i < live.size(); ++i)
      for (size_t j = i + 1; j < live.size(); ++j) {
        uint64_t a0 = live[i]->offset, a1 = a0 + live[i]->count * dtype_size(DType(live[i]->dtype));
        uint64_t b0 = live[j]->offset, b1 = b0 + live[j]->count * dtype_size(DType(live[j]->dtype));
        EXPECT_TRUE(a1 <= b0 || b1 <= a0) << live[i]->name_view() << " overlaps " << live[j]->name_view();
      }
  }
  // KV: [pages][kv heads][page][head_dim] bf16, per layer, K and V.
  EXPECT_EQ(p.h.pages_per_seq, 8);
  EXPECT_EQ(p.h.n_pages, 24);
  EXPECT_EQ(p.buffer(p.find_buffer("k_cache.1")).count, uint64_t(24 * 2 * 16 * 16));
  // RoPE constant, default scaling: theta^(-2i/hd).
  const float* inv = reinterpret_cast<const float*>(p.constants.data());
  EXPECT_FLOAT_EQ(inv[0], 1.0f);
  EXPECT_NEAR(inv[1], std::pow(10000.0, -2.0 / 16), 1e-7);
}

// Every matvec operator's tiles cover rows x k exactly once.
void expect_exact_cover(const Program& p) {
  std::map<uint16_t, std::map<std::pair<int, int>, int>> cover;  // op -> (row, k) -> count
  for (const TaskDesc& t : p.tasks) {
    const Opcode oc = Opcode(t.opcode);
    if (oc != Opcode::GateUp && oc != Opcode::MatvecResidual && oc != Opcode::LmHead && oc != Opcode::QkvProj) continue;
    for (int r = t.row0; r < t.row1; ++r) cover[t.op][{r, t.k0}]++;
  }
  for (auto& [op, m] : cover) {
    for (auto& [rk, n] : m) ASSERT_EQ(n, 1) << p.ops[op].name << " row " << rk.first << " k " << rk.second;
    if (Opcode(p.ops[op].opcode) == Opcode::QkvProj) {  // every raw q/k/v row
      ASSERT_EQ(int64_t(m.size()), qkv_width(p.h)) << p.ops[op].name << " L" << p.ops[op].layer;
      ASSERT_EQ(m.rbegin()->first.first, qkv_width(p.h) - 1);
    }
  }
}

// QKV tiles: inside one part (q, k or v), aligned to row_align from the part's
// start (or ending at the part's end), naming that part's weight and bias.
void expect_qkv_tiles(const Program& p, int align) {
  for (const TaskDesc& t : p.tasks) {
    if (Opcode(t.opcode) != Opcode::QkvProj) continue;
    const int part = t.arg[0];
    ASSERT_TRUE(part >= 0 && part <= 2);
    const int64_t b0 = qkv_part_begin(p.h, part), n = (part == 0 ? p.h.n_heads : p.h.n_kv_heads) * p.h.head_dim;
    EXPECT_EQ(t.arg[1], b0);
    EXPECT_GE(t.row0, b0);
    EXPECT_LE(t.row1, b0 + n) << describe_task(p, uint32_t(&t - p.tasks.data()));
    EXPECT_LT(t.row0, t.row1);
    EXPECT_EQ((t.row0 - b0) % align, 0);
    EXPECT_TRUE((t.row1 - b0) % align == 0 || t.row1 == b0 + n);
    const std::string w(p.buffer(t.buf[2]).name_view());
    EXPECT_NE(w.find(cat("self_attn.", "qkv"[part], "_proj.weight")), std::string::npos) << w;
    EXPECT_EQ(t.weight_bytes,
              uint64_t(t.row1 - t.row0) * uint64_t(p.h.hidden) * dtype_size(DType(p.buffer(t.buf[2]).dtype)));
  }
}

TEST(Partition, TilesCoverEveryRowOnceAndRespectHeadsAndSlices) {
  for (int w : {1, 3, 7, 132}) {
    Program p = compile(tiny(model::Arch::Qwen2), opts(w, 3));
    expect_exact_cover(p);
    expect_qkv_tiles(p, 8);
    int lm = 0, steps = 0;
    std::set<int> tiles;
    for (const TaskDesc& t : p.tasks) {
      switch (Opcode(t.opcode)) {
        case Opcode::MatvecResidual:
          if (op_name(p, t) == "o_proj") {  // one k-slice per kv-head group
            EXPECT_EQ(t.k1 - t.k0, 32);
            EXPECT_TRUE(t.flags & kFlagAtomicAccumulate);
          }
          break;
        case Opcode::LmHead:
          ++lm;
          tiles.insert(t.arg[0]);
          break;
        case Opcode::Step: ++steps; break;
        default: break;
      }
    }
    EXPECT_EQ(lm, p.h.n_lm_tiles);
    EXPECT_EQ(int(tiles.size()), lm);
    EXPECT_EQ(steps, 3);
    EXPECT_EQ(p.buffer(p.h.buf_argmax).count, uint64_t(3 * 2 * lm));
  }
}

TEST(Partition, SplitKDownProjOnLargeModels) {
  Program p = compile(shared_config("models/qwen3-tokenizer/Qwen3-8B/config.json"), opts(132, 1, 4096));
  std::set<int> slices;
  for (const TaskDesc& t : p.tasks)
    if (op_name(p, t) == "down_proj" && t.layer == 0) slices.insert(t.k0);
  EXPECT_EQ(slices, (std::set<int>{0, 3072, 6144, 9216}));
  expect_exact_cover(p);
}

// QKV row tiles on deliberately odd shapes: head_dim 10 or 12, one kv head,
// parts whose sizes are not multiples of row_align (60, 10, 10 rows), row_align
// 1, 3 and 8, more workers than rows. Every raw q/k/v row is produced exactly
// once per layer, by a tile inside one part, and the Program checks.
TEST(Partition, QkvRowsCoveredOnceOnOddShapes) {
  struct Shape {
    int nh, nkv, hd;
  };
  for (const Shape sh : {Shape{6, 3, 12}, Shape{6, 1, 10}, Shape{5, 5, 2}})
    for (int align : {1, 3, 8})
      for (int w : {1, 5, 37, 200}) {
        model::ModelConfig c = tiny(model::Arch::Qwen3);
        c.hidden = 72;
        c.intermediate = 37;
        c.n_heads = sh.nh;
        c.n_kv_heads = sh.nkv;
        c.head_dim = sh.hd;
        c.vocab = 301;
        c.n_layers = 2;
        CompileOptions o = opts(w, 2, 40);
        o.row_align = align;
        Program p = compile(c, o);
        SCOPED_TRACE(cat("nh ", sh.nh, " nkv ", sh.nkv, " hd ", sh.hd, " align ", align, " W ", w));
        expect_exact_cover(p);
        expect_qkv_tiles(p, align);
        int appends = 0;  // chunks covering pos: the last of each (layer, sequence, kv head)
        for (const TaskDesc& t : p.tasks)
          appends += Opcode(t.opcode) == Opcode::Attention && t.arg[1] == t.arg[2] - 1;
        EXPECT_EQ(appends, 2 * 2 * sh.nkv);  // layers x batch x kv heads
        CheckResult r = check(p, 2);
        EXPECT_TRUE(r.ok) << r.error;
      }
}

// Qwen3-8B at 132 workers: the QKV phase of every layer is spread over (nearly)
// every worker in tiles of about a 132nd of the layer's q/k/v bytes, instead of
// 48 whole-head tasks.
TEST(Partition, QkvSpreadsOverAllWorkersOnQwen3_8B) {
  Program p = compile(shared_config("models/qwen3-tokenizer/Qwen3-8B/config.json"), opts(132, 1, 4096));
  for (const OpDesc& od : p.ops) {
    if (Opcode(od.opcode) != Opcode::QkvProj) continue;
    std::set<int> workers;
    uint64_t bytes = 0, biggest = 0;
    for (uint32_t t = od.task_begin; t < od.task_begin + od.task_count; ++t) {
      bytes += p.tasks[t].weight_bytes;
      biggest = std::max(biggest, p.tasks[t].weight_bytes);
    }
    for (int w = 0; w < 132; ++w)
      for (const uint32_t* t = p.worker_begin(w); t != p.worker_end(w); ++t)
        if (*t >= od.task_begin && *t < od.task_begin + od.task_count) workers.insert(w);
    // Water-filling gives every worker behind the level a share; a few that
    // are ahead (they finished the previous layer's tail late) may get none.
    EXPECT_GE(workers.size(), 120u) << "layer " << od.layer;
    // The largest tile is within 2x of the even share (rows snap to 8 and the
    // levels differ a little); a whole head was 1 MB = 2.7x the share.
    EXPECT_LE(double(biggest), 2.0 * double(bytes) / 132) << "layer " << od.layer;
  }
}

// The footprints task_accesses declares for the QKV-phase opcodes.
TEST(Accesses, QkvAndAttentionFootprints) {
  const model::ModelConfig c = tiny(model::Arch::Qwen3);  // nh 4, nkv 2, hd 16: width 128
  for (const auto& [C, min_chunk] : {std::pair{1, 0}, std::pair{3, 0}, std::pair{3, 4}}) {
  SCOPED_TRACE(cat(C, " chunks, minimum ", min_chunk));
  CompileOptions o = opts(7, 3);
  o.attn_chunks = C;
  o.attn_min_chunk = min_chunk;
  Program p = compile(c, o);
  ASSERT_EQ(p.h.n_chunks, C);
  ASSERT_EQ(p.h.attn_min_chunk, min_chunk);
  const int64_t width = qkv_width(p.h), hd = 16, qd = 64, kvd = 32;
  ASSERT_EQ(width, 128);
  const int32_t qkv0 = p.find_buffer("qkv.0"), part0 = p.find_buffer("attn_part.0"), attn0 = p.find_buffer("attn.0");
  const uint64_t base = p.buffer(qkv0).offset;
  auto bytes = [&](int b, int64_t c0, int64_t c1) {  // qkv.0[b, c0:c1) in workspace bytes
    return std::pair<uint64_t, uint64_t>(base + uint64_t(b * width + c0) * 2, base + uint64_t(b * width + c1) * 2);
  };
  int seen[2] = {0, 0};
  std::map<int32_t, int> arrivals;
  for (const TaskDesc& t : p.tasks) {
    if (t.layer != 0) continue;
    std::vector<Access> acc;
    task_accesses(p, t, acc);
    std::set<std::pair<uint64_t, uint64_t>> qkv_reads, qkv_writes;
    std::set<std::pair<int32_t, AccessMode>> kv, other;  // (buffer, mode)
    for (const Access& a : acc) {
      if (a.buffer == qkv0)  // each row of a block of rows (AccessSink::rows: nrows rows, pitch bytes apart)
        for (uint64_t r = 0; r < a.nrows; ++r)
          (a.mode == AccessMode::Read ? qkv_reads : qkv_writes).insert({a.lo + r * a.pitch, a.hi + r * a.pitch});
      else if (a.buffer == part0 || a.buffer == attn0) other.insert({a.buffer, a.mode});
      if (a.space != 0) {
        kv.insert({a.buffer, a.mode});
        // Per (sequence, kv head) u = b * 2 + kvh, two units: 2u = earlier positions,
        // 2u + 1 = this step's position. The last chunk writes 2u + 1 (it appends
        // k and v); the chunks before it read 2u (attn_chunk_range); a single
        // chunk does both, and so does the last with a minimum chunk length
        // (attn_even_range).
        const uint64_t u = uint64_t(t.b0 * 2 + t.arg[0]);
        EXPECT_EQ(a.lo, 2 * u + (a.mode == AccessMode::Write ? 1 : 0));
        EXPECT_EQ(a.hi, a.lo + 1);
      }
    }
    const int32_t kc = p.find_buffer("k_cache.0"), vc = p.find_buffer("v_cache.0");
    switch (Opcode(t.opcode)) {
      case Opcode::QkvProj: {  // writes its rows of every sequence, nothing else of qkv
        ++seen[0];
        std::set<std::pair<uint64_t, uint64_t>> want;
        for (int b = 0; b < 3; ++b) want.insert(bytes(b, t.row0, t.row1));
        EXPECT_EQ(qkv_writes, want);
        EXPECT_TRUE(qkv_reads.empty());
        EXPECT_TRUE(kv.empty());
        break;
      }
      case Opcode::Attention: {  // the raw q rows of its 2 heads (+ k, v rows of its head when last)
        ++seen[1];
        ++arrivals[t.arg[3]];
        const int b = t.b0, h = t.arg[0];
        const bool last = t.arg[1] == t.arg[2] - 1;
        std::set<std::pair<uint64_t, uint64_t>> want = {bytes(b, h * 2 * hd, (h + 1) * 2 * hd)};
        if (last) {
          want.insert(bytes(b, qd + h * hd, qd + (h + 1) * hd));
          want.insert(bytes(b, qd + kvd + h * hd, qd + kvd + (h + 1) * hd));
        }
        EXPECT_EQ(qkv_reads, want);
        EXPECT_TRUE(qkv_writes.empty());
        std::set<std::pair<int32_t, AccessMode>> want_kv;
        for (int32_t cache : {kc, vc}) {
          if (C == 1 || !last || min_chunk > 0) want_kv.insert({cache, AccessMode::Read});
          if (last) want_kv.insert({cache, AccessMode::Write});
        }
        EXPECT_EQ(kv, want_kv);
        // partials and output: accumulates of the operator (the arrival counter orders them)
        EXPECT_EQ(other, (std::set<std::pair<int32_t, AccessMode>>{{part0, AccessMode::Accumulate},
                                                                    {attn0, AccessMode::Accumulate}}));
        EXPECT_EQ(t.buf[5], p.find_buffer("model.layers.0.self_attn.q_norm.weight"));
        EXPECT_EQ(t.buf[6], p.find_buffer("model.layers.0.self_attn.k_norm.weight"));
        break;
      }
      default: break;
    }
  }
  EXPECT_GT(seen[0], 0);
  EXPECT_EQ(seen[1], 3 * 2 * p.h.n_chunks);
  // one arrival counter per (sequence, kv head), shared by its C chunks, after the dependency counters
  EXPECT_EQ(arrivals.size(), size_t(3 * 2));
  for (const auto& [cnt, n] : arrivals) {
    EXPECT_EQ(n, p.h.n_chunks);
    EXPECT_LT(uint32_t(cnt), p.h.n_counters);
    EXPECT_TRUE(std::find(p.signals.begin(), p.signals.end(), uint32_t(cnt)) == p.signals.end());
  }
  EXPECT_TRUE(check(p, 3).ok);
  }
}

TEST(Program, ArrivalCounterMisuseIsRejected) {
  Program p = compile(tiny(model::Arch::Llama), opts(3, 1));
  auto first_attention = [&](Program& q) -> TaskDesc& {
    return *std::find_if(q.tasks.begin(), q.tasks.end(),
                         [](const TaskDesc& t) { return Opcode(t.opcode) == Opcode::Attention; });
  };
  {
    Program q = p;  // a counter that tasks signal
    first_attention(q).arg[3] = int32_t(q.signals.at(0));
    EXPECT_THROW(q.validate(), Error);
  }
  {
    Program q = p;  // out of range
    first_attention(q).arg[3] = int32_t(q.h.n_counters);
    EXPECT_THROW(q.validate(), Error);
  }
  EXPECT_NO_THROW(p.validate());
}

// --- dependencies & placement ------------------------------------------------

TEST(Dependencies, CountersMatchSignalersAndWaitOnlyBackwards) {
  Program p = compile(tiny(model::Arch::Llama), opts(3, 1));
  std::vector<uint32_t> signalers(p.h.n_counters, 0), last(p.h.n_counters, 0);
  for (uint32_t t = 0; t < p.tasks.size(); ++t)
    for (uint32_t i = 0; i < p.tasks[t].signal_count; ++i) {
      uint32_t c = p.signals[p.tasks[t].signal_begin + i];
      signalers[c]++;
      last[c] = t;
    }
  for (uint32_t t = 0; t < p.tasks.size(); ++t)
    for (uint32_t i = 0; i < p.tasks[t].wait_count; ++i) {
      const WaitDesc& w = p.waits[p.tasks[t].wait_begin + i];
      EXPECT_EQ(w.expected, signalers[w.counter]);
      EXPECT_EQ(w.offset, 1);  // cross-step waits are implied by the step gate
      EXPECT_LT(last[w.counter], t);
    }
  // The first operator reads only x, written by the previous step: no waits.
  for (uint32_t t = 0; t < p.ops[0].task_count; ++t) EXPECT_EQ(p.tasks[t].wait_count, 0u);
  // The Step task waits on the LM head alone (everything else is implied).
  const TaskDesc& st = p.tasks.back();
  ASSERT_EQ(st.wait_count, 1u);
  EXPECT_EQ(p.waits[st.wait_begin].expected, uint32_t(p.h.n_lm_tiles));
  EXPECT_EQ(p.h.step_expected, 1u);
}

TEST(Dependencies, PruningKeepsFewWaitsPerTask) {
  Program p = compile(shared_config("models/qwen3-tokenizer/Qwen3-8B/config.json"), opts(132, 1, 4096));
  uint32_t mx = 0;
  for (const TaskDesc& t : p.tasks) mx = std::max(mx, t.wait_count);
  EXPECT_LE(mx, 2u);
  EXPECT_LT(double(p.waits.size()) / double(p.tasks.size()), 1.5);
}

TEST(Placement, WorkerListsFollowTheGlobalOrder) {
  Program p = compile(tiny(model::Arch::Qwen3), opts(7, 3));
  std::vector<int> seen(p.tasks.size(), 0);
  for (int w = 0; w < 7; ++w)
    for (const uint32_t* t = p.worker_begin(w); t != p.worker_end(w); ++t) {
      if (t != p.worker_begin(w)) {
        EXPECT_LT(t[-1], t[0]);
      }
      seen[*t]++;
    }
  for (int s : seen) EXPECT_EQ(s, 1);
}

// --- checker -------------------------------------------------------------------

Program drop_wait(Program q, uint32_t w) {
  q.waits.erase(q.waits.begin() + w);
  for (auto& t : q.tasks) {
    if (w >= t.wait_begin && w < t.wait_begin + t.wait_count) {
      --t.wait_count;
    } else if (t.wait_begin > w) {
      --t.wait_begin;
    }
  }
  q.h.n_waits = uint32_t(q.waits.size());
  return q;
}

TEST(Checker, AcceptsCompiledPrograms) {
  for (auto a : {model::Arch::Llama, model::Arch::Qwen2, model::Arch::Qwen3})
    for (int w : {1, 3, 7, 132})
      for (int b : {1, 3}) {
        CheckResult r = check(compile(tiny(a), opts(w, b)), 3);
        EXPECT_TRUE(r.ok) << r.error;
        EXPECT_GT(r.accesses, 0u);
      }
}

TEST(Checker, EveryRemovedWaitIsCaught) {
  Program p = compile(tiny(model::Arch::Qwen3), opts(7, 3));
  for (uint32_t w = 0; w < p.waits.size(); ++w) {
    CheckResult r = check(drop_wait(p, w), 3);
    EXPECT_FALSE(r.ok) << "wait " << w;
    EXPECT_NE(r.error.find("without waiting"), std::string::npos) << r.error;
  }
  // A random sample on a larger Program.
  Program big = compile(tiny(model::Arch::Llama), opts(132, 3));
  std::mt19937 rng(1);
  for (int i = 0; i < 40; ++i) {
    const uint32_t w = rng() % uint32_t(big.waits.size());
    EXPECT_FALSE(check(drop_wait(big, w), 2).ok) << "wait " << w;
  }
}

// Regression: split-K accumulates of one operator commute with each other but
// each must follow the readers the group's first add followed (here: every QKV
// task reads x before o_proj adds to it). Before the fix, the k-slice 1 tasks
// of o_proj had no wait on QKV and neither the compiler nor the checker noticed.
TEST(Checker, AccumulateGroupsFollowEarlierReaders) {
  // One task per worker, so worker order implies nothing.
  CompileOptions o = opts(1000, 1);
  o.attn_chunks = 2;
  Build b = begin_build(graph::build_decode_graph(tiny(model::Arch::Llama), 1), o);
  plan_buffers(b);
  partition(b);
  ASSERT_LE(b.p.tasks.size(), 1000u);
  for (size_t t = 0; t < b.task_worker.size(); ++t) b.task_worker[t] = int32_t(t);
  allocate_arenas(b);
  build_dependencies(b);
  place(b);
  b.p.h.n_buffers = uint32_t(b.p.buffers.size());
  plan_target(b.p, b.opt.target);
  Program& p = b.p;
  ASSERT_TRUE(check(p, 3).ok);
  // The compiler: every o_proj task of a later k-slice waits for all the QKV
  // tasks of its layer.
  std::map<int, uint32_t> n_qkv;
  for (const OpDesc& od : p.ops)
    if (Opcode(od.opcode) == Opcode::QkvProj) n_qkv[od.layer] = od.task_count;
  std::vector<uint32_t> victims;
  for (uint32_t t = 0; t < p.tasks.size(); ++t) {
    const TaskDesc& td = p.tasks[t];
    if (op_name(p, td) != "o_proj" || td.k0 == 0) continue;
    ASSERT_GT(n_qkv[td.layer], 2u);
    bool found = false;
    for (uint32_t i = 0; i < td.wait_count; ++i)
      if (p.waits[td.wait_begin + i].expected == n_qkv[td.layer]) {
        found = true;
        victims.push_back(td.wait_begin + i);
      }
    EXPECT_TRUE(found) << describe_task(p, t);
  }
  // The checker: without one of those waits, an add to x overtakes a QKV read.
  ASSERT_FALSE(victims.empty());
  for (uint32_t w : victims) {
    CheckResult r = check(drop_wait(p, w), 3);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.error.find("accumulated after an access"), std::string::npos) << r.error;
  }
}

TEST(Checker, StructuralErrors) {
  Program p = compile(tiny(model::Arch::Llama), opts(3, 1));
  Program q = p;
  q.waits[0].expected += 1;
  EXPECT_NE(check(q).error.find("signal"), std::string::npos);
  // A wait on a counter signalled by a later task can deadlock.
  q = p;
  uint32_t t0 = 0;
  while (p.tasks[t0].wait_count == 0) ++t0;
  q.waits[p.tasks[t0].wait_begin].counter = p.h.step_counter;
  q.waits[p.tasks[t0].wait_begin].expected = p.h.step_expected;
  EXPECT_NE(check(q).error.find("deadlock"), std::string::npos);
  // Steps need >= 2.
  EXPECT_THROW(check(p, 1), Error);
}

TEST(Checker, OddSizesCompileAndCheck) {
  // Deliberately awkward shapes: rows not multiples of row_align, vocab 1002,
  // GQA 6/3, head_dim 12, more workers than rows.
  for (int w : {1, 5, 37, 200})
    for (int b : {1, 2}) {
      model::ModelConfig c = tiny(model::Arch::Qwen3);
      c.hidden = 72;
      c.intermediate = 37;
      c.n_heads = 6;
      c.n_kv_heads = 3;
      c.head_dim = 12;
      c.vocab = 1002;
      c.n_layers = 3;
      Program p = compile(c, opts(w, b, 50));
      expect_exact_cover(p);
      expect_qkv_tiles(p, 8);
      CheckResult r = check(p, 3);
      EXPECT_TRUE(r.ok) << "W" << w << " B" << b << ": " << r.error;
    }
}

TEST(Checker, EveryBiasCompilesAndChecks) {
  model::ModelConfig c = tiny(model::Arch::Llama);
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  for (int w : {1, 7}) {
    Program p = compile(c, opts(w, 2));
    int biased = 0;
    for (const TaskDesc& t : p.tasks)
      if (Opcode(t.opcode) == Opcode::MatvecResidual && t.buf[2] >= 0) {
        EXPECT_EQ(t.k0, 0);  // only the first k-slice adds the bias
        ++biased;
      }
    EXPECT_GT(biased, 0);
    std::vector<uint8_t> bytes = serialize(p);
    EXPECT_NO_THROW(deserialize(bytes.data(), bytes.size(), "biases"));
    EXPECT_TRUE(check(p, 2).ok);
  }
}

// --- serialization --------------------------------------------------------------

TEST(Serialize, RoundTripIsByteIdentical) {
  Program p = compile(tiny(model::Arch::Qwen3), opts(7, 3));
  std::vector<uint8_t> a = serialize(p);
  Program q = deserialize(a.data(), a.size(), "memory");
  EXPECT_EQ(serialize(q), a);
  const std::string path = cat(KEEL_BINARY_DIR, "/test_compiler_roundtrip.keel");
  save(p, path);
  Program r = load(path);
  EXPECT_EQ(serialize(r), a);
  EXPECT_EQ(r.tasks.size(), p.tasks.size());
  EXPECT_EQ(std::memcmp(r.tasks.data(), p.tasks.data(), p.tasks.size() * sizeof(TaskDesc)), 0);
}

void expect_load_error(std::vector<uint8_t> bytes, const std::string& needle) {
  try {
    deserialize(bytes.data(), bytes.size(), "bad.keel");
    FAIL() << "no error for " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.keel"), std::string::npos) << e.what();
  }
}

TEST(Serialize, MalformedFilesGiveClearErrors) {
  Program p = compile(tiny(model::Arch::Llama), opts(3, 1));
  const std::vector<uint8_t> good = serialize(p);
  std::vector<uint8_t> b = good;
  b[0] ^= 1;
  expect_load_error(b, "bad magic");
  b = good;
  b[4] = 99;
  expect_load_error(b, "version");
  for (size_t cut : {size_t(3), size_t(100), sizeof(ProgramHeader) + 4, good.size() / 2, good.size() - 1})
    expect_load_error(std::vector<uint8_t>(good.begin(), good.begin() + cut), cut < 16 ? "not a keel program" : "truncated");
  b = good;
  b[good.size() / 2] ^= 0x40;
  expect_load_error(b, "");  // some error (checksum or a field), naming the file
  Program q = p;
  q.tasks[5].buf[2] = 9999;
  expect_load_error(serialize(q), "out of range");
  q = p;
  q.waits[0].counter = 1u << 30;
  expect_load_error(serialize(q), "out of range");
  q = p;
  std::swap(q.worker_tasks[0], q.worker_tasks[1]);
  expect_load_error(serialize(q), "topological order");
  // Found by fuzz_program: a counter count no signal or task uses made the
  // checker (and executors) allocate 6 GiB for a 10 KB file.
  q = p;
  q.h.n_counters = 1u << 28;
  expect_load_error(serialize(q), "counters, more than its");
  EXPECT_THROW(load(cat(KEEL_BINARY_DIR, "/no_such_program.keel")), Error);
}

// Random field corruptions behind a valid checksum: the loader either rejects
// the file with keel::Error or accepts a Program whose every range is in bounds.
TEST(Serialize, CorruptFieldsNeverCrash) {
  Program p = compile(tiny(model::Arch::Qwen2), opts(5, 2));
  std::mt19937 rng(3);
  int rejected = 0;
  for (int i = 0; i < 400; ++i) {
    Program q = p;
    uint8_t* bytes = reinterpret_cast<uint8_t*>(q.tasks.data());
    const size_t n = q.tasks.size() * sizeof(TaskDesc);
    for (int k = 0; k < 1 + int(rng() % 3); ++k) bytes[rng() % n] = uint8_t(rng());
    std::vector<uint8_t> file = serialize(q);
    try {
      Program r = deserialize(file.data(), file.size(), "fuzz");
      std::vector<Access> acc;
      for (const TaskDesc& t : r.tasks) task_accesses(r, t, acc);
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 100);
}

// --- reports ---------------------------------------------------------------------

TEST(Report, TextJsonDot) {
  Program p = compile(tiny(model::Arch::Qwen3), opts(7, 1));
  const std::string r = report(p, 3350);
  for (const char* s : {"bytes per worker", "max/mean", "critical path", "ms/token", "gate_up", "lm_head"})
    EXPECT_NE(r.find(s), std::string::npos) << s << "\n" << r;
  // The per-operator spread: one step task on 7 workers is 7.00; the step's
  // whole bytes per worker line is there as well.
  EXPECT_NE(r.find("7.00\n"), std::string::npos) << r;
  EXPECT_NE(r.find("busiest worker"), std::string::npos) << r;
  const std::string j = to_json(p);
  EXPECT_NE(j.find("\"tasks\""), std::string::npos);
  EXPECT_NE(j.find("\"qkv_proj\""), std::string::npos);
  const std::string d = to_dot(p), dt = to_dot(p, true);
  EXPECT_EQ(d.rfind("digraph keel {", 0), 0u);
  EXPECT_NE(d.find("->"), std::string::npos);
  EXPECT_GT(dt.size(), d.size());
  Simulation s = simulate(p, 3350);
  EXPECT_GT(s.step_us, s.floor_us);
  EXPECT_FALSE(s.critical.empty());
  EXPECT_EQ(Opcode(p.tasks[s.critical.back()].opcode), Opcode::Step);
}

TEST(Options, BadOptionsNameTheOption) {
  const model::ModelConfig c = tiny(model::Arch::Llama);
  auto msg = [&](CompileOptions o) {
    try {
      compile(c, o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CompileOptions o = opts(-1, 1);  // 0 is "the target's SM count"
  EXPECT_NE(msg(o).find("--workers"), std::string::npos);
  o = opts(3, 1);
  o.page_size = 0;
  EXPECT_NE(msg(o).find("--page-size"), std::string::npos);
  o = opts(3, 1, 4096);
  // The CLI flag is --context (there is no --max-context flag).
  EXPECT_NE(msg(o).find("--context 4096"), std::string::npos);
  o = opts(3, 0);
  EXPECT_NE(msg(o).find("batch"), std::string::npos);
}

// Issue 16: sizes that config.json accepts (4096 layers, 16384 kv heads) made
// `keel compile` run for minutes and take 17 GB. Such Programs are refused
// up front, naming the fields; a deep but plausible model still compiles, and
// fusing no longer rescans the op list per op (4096 layers took over 30 s).
TEST(Options, HugeConfigsAreRefusedUpFront) {
  model::ModelConfig c = tiny(model::Arch::Llama);
  c.n_layers = 4096;
  c.n_heads = c.n_kv_heads = 16384;
  c.head_dim = 64;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    compile(c, opts(132, 1));
    ADD_FAILURE() << "a Program of ~67 million tasks was compiled";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("num_hidden_layers 4096"), std::string::npos) << m;
    EXPECT_NE(m.find("num_attention_heads 16384, num_key_value_heads 16384"), std::string::npos) << m;
  }
  // Building the 4096-layer graph is all the work done: well under the minutes
  // it took (10 s leaves room for a loaded machine and sanitizers).
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);

  model::ModelConfig deep = tiny(model::Arch::Llama);
  deep.n_layers = 1024;
  const auto t1 = std::chrono::steady_clock::now();
  Program p = compile(deep, opts(4, 1));
  EXPECT_EQ(p.h.n_layers, 1024);
  // Was about 3 s in fusing alone (quadratic); linear now. 20 s: sanitizers.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 20.0);
}

// --- Qwen3-8B @ 132 workers -------------------------------------------------------

TEST(Qwen3_8B, BalancedAt132Workers) {
  const model::ModelConfig c = shared_config("models/qwen3-tokenizer/Qwen3-8B/config.json");
  CompileOptions o = opts(132, 1, 4096);
  const auto t0 = std::chrono::steady_clock::now();
  Program p = compile(c, o);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::vector<uint64_t> bpw = bytes_per_worker(p);
  double mean = 0;
  for (uint64_t v : bpw) mean += double(v);
  mean /= double(bpw.size());
  const double ratio = double(*std::max_element(bpw.begin(), bpw.end())) / mean;
  std::cout << "[ figures ] Qwen3-8B @132: compile " << ms << " ms, " << p.tasks.size() << " tasks, bytes/worker max/mean "
            << ratio << "\n"
            << report(p, 3350);
  EXPECT_LE(ratio, 1.05);
  CheckResult r = check(p, 2);
  EXPECT_TRUE(r.ok) << r.error;
}

}  // namespace
}  // namespace keel::compiler

namespace keel::compiler {
// Sliding windows compile: the header carries the window, the Attention
// tasks of sliding layers (only those) carry kFlagSlidingWindow, the Program
// validates and checks, and a serialized copy keeps both.
TEST(Compile, SlidingWindowLayersAreFlagged) {
  model::ModelConfig c = tiny(model::Arch::Qwen2);
  c.sliding_window = 5;
  c.sliding_layers = {0, 1};  // qwen2 with max_window_layers 1
  CompileOptions o;
  o.workers = 7;
  o.max_context = 128;
  Program p = compile(c, o);
  EXPECT_EQ(p.h.sliding_window, 5);
  int flagged[2] = {0, 0}, total[2] = {0, 0};
  for (const TaskDesc& t : p.tasks) {
    if (Opcode(t.opcode) != Opcode::Attention) continue;
    ++total[t.layer];
    flagged[t.layer] += (t.flags & kFlagSlidingWindow) != 0;
  }
  EXPECT_GT(total[0], 0);
  EXPECT_EQ(flagged[0], 0);
  EXPECT_EQ(flagged[1], total[1]);
  EXPECT_NO_THROW(check_or_throw(p, 2));
  const std::vector<uint8_t> bytes = serialize(p);
  const Program q = deserialize(bytes.data(), bytes.size(), "test");
  EXPECT_EQ(q.h.sliding_window, 5);
  // A flagged task in a Program whose header has no window is refused.
  p.h.sliding_window = 0;
  EXPECT_THROW(p.validate(), Error);
}

// The RoPE attention factor (yarn) multiplies q and k after RoPE, so scores by
// its square: folded into attn_scale once, for every executor.
TEST(Compile, YarnAttentionFactorScalesScores) {
  model::ModelConfig c = tiny(model::Arch::Qwen3);
  CompileOptions o;
  o.workers = 3;
  const float plain = compile(c, o).h.attn_scale;
  EXPECT_FLOAT_EQ(plain, 0.25f);  // 1 / sqrt(16)
  c.rope.type = model::RopeType::Yarn;
  c.rope.attention_factor = 1.5;
  EXPECT_FLOAT_EQ(compile(c, o).h.attn_scale, float(1.5 * 1.5 / 4.0));
}

}  // namespace keel::compiler
