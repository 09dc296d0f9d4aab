// The partition pass: fused operators -> tasks, with a worker for each. Matvec
// operators are cut by water-filling: given each worker's predicted load so far,
// find the level lambda with sum_w max(0, lambda - load_w) = the operator's cost
// and give worker w the rows worth (lambda - load_w), rounded to row_align. So
// every operator is spread over the workers that are behind, and the per-worker
// totals stay level across the whole step (in Programs of several tokens a
// step, the workers predicted to finish first get the first rows). QKV rows
// are water-filled too (the q/k epilogues that need whole heads live in the
// Attention tasks). Coarse tasks (attention chunks, steps) go to the
// least-loaded worker, in order.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <unordered_map>

#include "compiler/fuse.h"
#include "compiler/passes.h"
#include "core/error.h"
#include "ops/ops.h"
#include "program/smem_plan.h"

namespace keel::compiler {

using namespace program;  // the passes build a Program

namespace {

struct Partitioner {
  Build& b;
  const model::ModelConfig& c;
  const int W;
  uint64_t es;  // weight element size

  double cost_us(uint64_t bytes) const {
    return double(bytes) / b.bytes_per_us_per_worker + b.opt.task_overhead_us;
  }

  /// A task of operator `o`: rows [r0, r1), reduction slice [k0, k1), every
  /// sequence of the batch. The caller fills its operands through the
  /// opcode's view and its weight bytes.
  TaskDesc tile_task(Opcode oc, uint16_t o, int layer, int64_t r0, int64_t r1, int64_t k0, int64_t k1) const {
    TaskDesc t;
    t.opcode = uint16_t(oc);
    t.op = o;
    t.layer = int16_t(layer);
    t.row0 = int32_t(r0);
    t.row1 = int32_t(r1);
    t.k0 = int32_t(k0);
    t.k1 = int32_t(k1);
    t.b0 = 0;
    t.b1 = oc == Opcode::LmHead ? int32_t(program::n_decode_lanes(b.p.h)) : b.p.h.batch;  // LM head: decode lanes
    return t;
  }

  /// A task of operator `o` for sequence bb alone (attention, rms_norm, step).
  TaskDesc seq_task(Opcode oc, uint16_t o, int layer, int bb) const {
    TaskDesc t;
    t.opcode = uint16_t(oc);
    t.op = o;
    t.layer = int16_t(layer);
    t.b0 = bb;
    t.b1 = bb + 1;
    return t;
  }

  uint16_t begin_op(const char* name, Opcode oc, int layer) {
    OpDesc d;
    std::strncpy(d.name, name, sizeof(d.name) - 1);
    d.opcode = uint16_t(oc);
    d.layer = int16_t(layer);
    d.task_begin = uint32_t(b.p.tasks.size());
    b.p.ops.push_back(d);
    return uint16_t(b.p.ops.size() - 1);
  }
  void end_op() { b.p.ops.back().task_count = uint32_t(b.p.tasks.size()) - b.p.ops.back().task_begin; }

  // Predicted schedule: when each worker is free, and when the current
  // operator's inputs are ready (operator-level barrier approximation).
  double ready = 0, op_finish = 0;

  double avail(int w) const { return std::max(b.load_us[size_t(w)], ready); }
  void emit(TaskDesc t, int worker, double extra_us = 0) {
    t.cost_us = float(cost_us(t.weight_bytes) + extra_us);
    b.p.tasks.push_back(t);
    b.task_worker.push_back(worker);
    b.load_us[size_t(worker)] = avail(worker) + t.cost_us;
    op_finish = std::max(op_finish, b.load_us[size_t(worker)]);
  }
  // The worker free first (coarse tasks: attention, merges, steps); among workers
  // free at the operator's ready time, the one that became idle earliest (so an
  // attention chunk avoids a worker that ran a KV append, which the operator-level
  // readiness cannot see).
  int least_loaded() const {
    int best = 0;
    for (int w = 1; w < W; ++w)
      if (avail(w) < avail(best) || (avail(w) == avail(best) && b.load_us[size_t(w)] < b.load_us[size_t(best)]))
        best = w;
    return best;
  }
  // Water-filling: splits `units` rows of `unit_bytes` each into tiles that
  // never straddle a slice boundary (`cuts`: increasing, from 0 to units) and
  // calls fn(worker, u0, u1) for each tile, in row order.
  template <class Fn>
  void water_fill(int64_t units, int64_t slice, uint64_t unit_bytes, Fn fn) {
    water_fill_cuts(slice_cuts(units, slice), unit_bytes, fn);
  }
  /// 0, slice, 2 slice, ..., units.
  static std::vector<int64_t> slice_cuts(int64_t units, int64_t slice) {
    std::vector<int64_t> cuts;
    for (int64_t u = 0; u < units; u += slice) cuts.push_back(u);
    cuts.push_back(units);
    return cuts;
  }
  template <class Fn>
  void water_fill_cuts(const std::vector<int64_t>& cuts, uint64_t unit_bytes, Fn fn) {
    const int64_t units = cuts.back();
    const double total = double(units) * double(unit_bytes) / b.bytes_per_us_per_worker;
    std::vector<double> sorted(static_cast<size_t>(W));
    for (int w = 0; w < W; ++w) sorted[size_t(w)] = avail(w);
    std::sort(sorted.begin(), sorted.end());
    // lambda: the level where the filled area equals `total`.
    double lambda = sorted[0] + total, acc = 0;
    for (int k = 0; k < W; ++k) {
      acc += sorted[k];
      const double lvl = (total + acc) / double(k + 1);
      if (k + 1 == W || lvl <= sorted[k + 1]) {
        lambda = lvl;
        break;
      }
    }
    const int64_t align = b.opt.row_align;
    // The slice [cuts[i], cuts[i+1]) holding row v (the last one for v == units).
    auto slice_of = [&](int64_t v) {
      size_t i = size_t(std::upper_bound(cuts.begin(), cuts.end(), v) - cuts.begin());
      return std::min(i, cuts.size() - 1) - 1;
    };
    auto snap = [&](double u) {  // to a row boundary multiple of align within its slice
      const int64_t v = std::clamp<int64_t>(int64_t(u + 0.5), 0, units);
      const size_t i = slice_of(v);
      const int64_t s0 = cuts[i], s1 = cuts[i + 1];
      return s0 + std::min<int64_t>((v - s0 + align / 2) / align * align, s1 - s0);
    };
    double cum = 0;
    int64_t prev = 0;
    const double per_unit_us = double(unit_bytes) / b.bytes_per_us_per_worker;
    std::vector<int64_t> amount(static_cast<size_t>(W), 0);  // rows of each worker
    for (int w = 0; w < W; ++w) {
      cum += std::max(0.0, lambda - avail(w)) / per_unit_us;
      int64_t end = w + 1 == W ? units : snap(cum);
      end = std::max(end, prev);
      amount[size_t(w)] = end - prev;
      prev = end;
    }
    // The rows go to the workers in the order they are predicted to finish
    // their share (ties: worker index), so the rows a consumer reads first are
    // written first: the rounding to row_align leaves some workers a tile
    // larger than others (Qwen3-8B's gate/up at 64 tokens: 72 workers of one
    // 64-row block, 60 of two), and in worker order those would be spread
    // over every k-slice of down_proj, each of which then waits for the
    // slowest (H100: that prefill 2.1% faster, Qwen3-8B batch 64 1.6%). Only
    // for Programs of several tokens a step (the same order made Qwen3-8B's
    // batch 1 1% slower), and where every slice is a multiple of row_align,
    // so that the moved tiles stay aligned within their slices.
    std::vector<int> order(static_cast<size_t>(W));
    for (int w = 0; w < W; ++w) order[size_t(w)] = w;
    bool reorder = b.p.h.batch > 1;
    for (size_t i = 0; i + 1 < cuts.size(); ++i) reorder = reorder && (cuts[i + 1] - cuts[i]) % align == 0;
    if (reorder) {
      auto finish = [&](int w) { return avail(w) + double(amount[size_t(w)]) * per_unit_us; };
      std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return finish(x) < finish(y); });
    }
    prev = 0;
    for (const int w : order) {
      const int64_t end = prev + amount[size_t(w)];
      for (int64_t u = prev; u < end;) {  // split at slice boundaries
        const int64_t stop = std::min(end, cuts[slice_of(u) + 1]);
        fn(w, u, stop);
        u = stop;
      }
      prev = end;
    }
  }

  // Lanes of a matrix operator's tasks: all of them up to T = kMmMaxTokens
  // (the tensor-core tile's most tokens) or the target's wide tiles' tokens
  // (mm_tokens_for); more (a long prefill chunk) in G groups of at most T,
  // balanced and a multiple of 8 (mma's token groups). Returns G and the
  // group size.
  std::pair<int, int> lane_groups() const {
    const int B = b.p.h.batch;
    const int wide = mm_tokens_for(b.opt.target, B), T = wide > 0 ? wide : program::kMmMaxTokens;
    if (B <= T) return {1, B};
    const int G = (B + T - 1) / T;
    const int n = ((B + G - 1) / G + 7) / 8 * 8;
    return {(B + n - 1) / n, n};
  }
  // water_fill_cuts over the G lane groups' copies of the rows (`cuts` repeated
  // G times, group-major, so no tile straddles two groups): fn(worker, u0, u1,
  // b0, b1) with rows [u0, u1) and lanes [b0, b1). Equal levels give group g's
  // rows to its own workers in the same order as the other groups', so tasks
  // that read the same weight rows run at about the same time (the second
  // reads hit L2).
  template <class Fn>
  void water_fill_lanes(const std::vector<int64_t>& cuts, uint64_t unit_bytes, Fn fn) {
    const auto [G, n] = lane_groups();
    const int B = b.p.h.batch;
    if (G == 1) return water_fill_cuts(cuts, unit_bytes, [&](int w, int64_t u0, int64_t u1) { fn(w, u0, u1, 0, B); });
    const int64_t units = cuts.back();
    std::vector<int64_t> all;
    for (int g = 0; g < G; ++g)
      for (size_t i = g == 0 ? 0 : 1; i < cuts.size(); ++i) all.push_back(int64_t(g) * units + cuts[i]);
    water_fill_cuts(all, unit_bytes, [&](int w, int64_t v0, int64_t v1) {
      const int64_t g = v0 / units;
      fn(w, v0 - g * units, v1 - g * units, int(g) * n, std::min(B, int(g + 1) * n));
    });
  }

  // The raw [q; k; v] rows, water-filled like gate/up; a tile lies inside one
  // part (q, k or v), so it streams one weight matrix.
  void qkv(const graph::Op& op) {
    const int64_t H = c.hidden;
    const int64_t off[3] = {qkv_part_begin(b.p.h, 0), qkv_part_begin(b.p.h, 1), qkv_part_begin(b.p.h, 2)};
    const std::vector<int64_t> cuts = {off[0], off[1], off[2], qkv_width(b.p.h)};
    uint16_t o = begin_op("qkv", Opcode::QkvProj, op.layer);
    const char* pre[3] = {"q_", "k_", "v_"};
    const int32_t x = b.id(op.inputs.at(0)), norm = b.id_or_none(op.weight("norm")), out = b.id(op.outputs.at(0));
    water_fill_lanes(cuts, uint64_t(H) * es, [&](int worker, int64_t u0, int64_t u1, int b0, int b1) {
      const int part = u0 < off[1] ? 0 : u0 < off[2] ? 1 : 2;
      TaskDesc t = tile_task(Opcode::QkvProj, o, op.layer, u0, u1, 0, H);
      t.b0 = b0, t.b1 = b1;
      ops::QkvProjOperands v;
      v.x = x;
      v.norm_w = norm;
      v.weight = b.id(op.weight(cat(pre[part], "W")));
      v.bias = b.id_or_none(op.weight(cat(pre[part], "bias")));
      v.out = out;
      v.part = part;
      v.part_row0 = int32_t(off[part]);
      v.to(t);
      t.weight_bytes = uint64_t(u1 - u0) * uint64_t(H) * es;
      emit(t, worker);
    });
    end_op();
  }

  // Sequences per attention task (Target::batch_attn_seqs; 0: the fewest, a
  // power of two, that give a batch's (sequence, kv head) pairs one round of
  // tasks over the workers), where the Program allows several
  // (program::attn_group_serves: one chunk each, no prefill lanes, the
  // streaming shapes). A task of S sequences runs them side by side, 8 / S
  // warps each (the CUDA kernel's attention_group): one wait, one round trip
  // for every q, k and v row, one pipeline per warp S times as long, instead
  // of S tasks' fixed costs.
  int attn_seqs(int B) const {
    const int want = b.opt.target.batch_attn_seqs;
    KEEL_CHECK(want >= 0 && want <= program::kAttnMaxSeqs && (want & (want - 1)) == 0, "compile: target ",
               b.opt.target.name, ": attention sequences a task ", want, " must be 0 (the compiler's), 1, 2, 4 or 8");
    if (B <= 1 || !program::attn_group_serves(b.p.h)) return 1;
    if (want > 0) return want;
    int S = 1;
    while (S < program::kAttnMaxSeqs && int64_t(B) * c.n_kv_heads > int64_t(S) * W) S *= 2;
    return S;
  }

  // Attention: C chunks per (sequence, kv head), to the least-loaded workers with
  // realistic fixed costs, so no worker runs two of them while another runs none.
  // The chunks that append this step's k and v (the last of each kv head, which
  // need the k and v rows of the projection) are placed after all the others.
  // arg 3 numbers the (layer, sequence, kv head) group; build_dependencies turns
  // it into the group's arrival counter.
  void attention(const graph::Op& op) {
    const int nkv = int(c.n_kv_heads), C = b.p.h.n_chunks;
    // A Program's prompt lanes attend with KvAppend + PrefillAttention where
    // the kernel serves the shape (program::prefill_attn_serves); the decode
    // lanes (all lanes otherwise) with Attention's chunks.
    const bool tiles = program::prefill_attn_serves(c.head_dim, c.n_heads / nkv, b.p.h.seq_lanes);
    const int B = tiles ? int(program::n_decode_lanes(b.p.h)) : b.p.h.batch;
    if (tiles) prefill_attention(op);
    if (B == 0) return;
    // Chunks with work at the predicted context: all C (attn_chunk_range: the
    // C - 1 before the appending one), or as many as the minimum length gives
    // (attn_even_range: the last ones, the appending one among them).
    const int64_t L = b.p.h.attn_min_chunk;
    const int active = L > 0 ? int(std::clamp<int64_t>((b.opt.predict_context + L - 1) / L, 1, C)) : C;
    const double kv_us = double(b.opt.predict_context) / (L > 0 ? active : C) * double(c.head_dim) * 2 * 2 /
                         b.bytes_per_us_per_worker;
    auto cost = [&](int ch) {
      if (L <= 0) return ch == C - 1 ? b.opt.kv_append_us : kv_us;
      if (ch < C - active) return 0.0;  // empty at the predicted context
      return kv_us + (ch == C - 1 ? b.opt.kv_append_us : 0.0);
    };
    uint16_t o = begin_op("attention", Opcode::Attention, op.layer);
    const int32_t part = b.id(cat("attn_part.", op.layer));
    const int32_t group0 = int32_t(b.n_arrival_groups);
    // A prefill sequence's other chunks read what the appending chunks of
    // every lane of the sequence write this step: those come first.
    const bool prefill = b.p.h.seq_lanes > 1;
    auto last = [&](int pass) { return prefill ? pass == 0 : pass == 1; };
    const int S = attn_seqs(B);
    const int groups = (B + S - 1) / S;
    for (int pass = 0; pass < 2; ++pass)
      for (int gi = 0; gi < groups; ++gi)
        for (int kvh = 0; kvh < nkv; ++kvh)
          for (int ch = last(pass) ? C - 1 : 0; ch < (last(pass) ? C : C - 1); ++ch) {
            const int bb = gi * S, n = std::min(S, B - bb);
            TaskDesc t = seq_task(Opcode::Attention, o, op.layer, bb);
            t.b1 = bb + n;
            ops::AttentionOperands v;
            v.qkv = b.id(op.inputs.at(0));
            v.k_cache = b.id(op.inputs.at(1));
            v.v_cache = b.id(op.inputs.at(2));
            v.partial = part;
            v.state = b.p.h.buf_state;
            v.q_norm = b.id_or_none(op.weight("q_head_norm"));
            v.k_norm = b.id_or_none(op.weight("k_head_norm"));
            v.out = b.id(op.outputs.at(0));
            v.kv_head = kvh;
            v.chunk = ch;
            v.n_chunks = C;
            v.arrival = group0 + gi * nkv + kvh;
            v.to(t);
            if (c.window(op.layer) > 0) t.flags |= program::kFlagSlidingWindow;
            emit(t, least_loaded(), n * cost(ch) + b.opt.attn_task_us);
          }
    b.n_arrival_groups += uint32_t(groups * nkv);
    end_op();
  }

  // A prefill Program's prompt lanes: KvAppend tasks (blocks of lanes x kv
  // heads) put the step's k and v in the cache, then PrefillAttention tasks
  // (the same blocks: the target's rows, at most program::prefill_attn_lanes lanes)
  // attend over it, each reading a kv head's cache once for its block.
  void prefill_attention(const graph::Op& op) {
    const program::ProgramHeader& h = b.p.h;
    const int nkv = int(c.n_kv_heads), g = int(c.n_heads / c.n_kv_heads);
    const int D = int(program::n_decode_lanes(h)), L = int(h.seq_lanes);
    const int most = int(program::prefill_attn_lanes(g, L));
    const int rows = L > program::kMmMaxTokens ? b.opt.target.prefill_attn_rows_wide : b.opt.target.prefill_attn_rows;
    const int Lb = std::clamp((rows > 0 ? rows : program::kPrefillAttnRows) / g, 1, most), nseq = (h.batch - D) / L;
    const bool window = c.window(op.layer) > 0;
    const double ready0 = ready;
    auto blocks = [&](Opcode oc, uint16_t o, auto&& fill, double cost, bool windowed) {
      for (int s = 0; s < nseq; ++s)
        for (int l0 = 0; l0 < L; l0 += Lb)
          for (int kvh = 0; kvh < nkv; ++kvh) {
            TaskDesc t = seq_task(oc, o, op.layer, D + s * L + l0);
            t.b1 = D + s * L + std::min(l0 + Lb, L);
            fill(t, kvh);
            if (windowed) t.flags |= program::kFlagSlidingWindow;
            emit(t, least_loaded(), cost);
          }
    };
    const int32_t qkv = b.id(op.inputs.at(0)), kc = b.id(op.inputs.at(1)), vc = b.id(op.inputs.at(2));
    uint16_t o = begin_op("kv_append", Opcode::KvAppend, op.layer);
    blocks(Opcode::KvAppend, o, [&](TaskDesc& t, int kvh) {
      ops::KvAppendOperands v;
      v.qkv = qkv, v.k_cache = kc, v.v_cache = vc, v.state = h.buf_state;
      v.k_norm = b.id_or_none(op.weight("k_head_norm"));
      v.kv_head = kvh;
      v.to(t);
    }, b.opt.kv_append_us, false);  // appends whatever the window
    end_op();
    // The attention reads what every append wrote (the operator-level readiness).
    ready = std::max(ready0, op_finish);
    const double kv_us = double(b.opt.predict_context) * double(c.head_dim) * 2 * 2 / b.bytes_per_us_per_worker;
    o = begin_op("attention", Opcode::PrefillAttention, op.layer);
    blocks(Opcode::PrefillAttention, o, [&](TaskDesc& t, int kvh) {
      ops::PrefillAttentionOperands v;
      v.qkv = qkv, v.k_cache = kc, v.v_cache = vc, v.state = h.buf_state;
      v.q_norm = b.id_or_none(op.weight("q_head_norm"));
      v.out = b.id(op.outputs.at(0));
      v.kv_head = kvh;
      v.to(t);
    }, kv_us + b.opt.attn_task_us, window);
    end_op();
    ready = ready0;  // the decode lanes' chunks (if any) wait for the projection only
  }

  void matvec_residual(const graph::Op& op) {
    const graph::Tensor& w = b.fused.tensor(op.weight("W"));
    const int64_t R = w.rows, K = w.cols;
    const bool is_o = op.name == "o_proj";
    int S = is_o ? b.opt.o_split_k : b.opt.down_split_k;
    // A target's choice for a batch Program (tensor-core tiles, whose slices
    // are whole 64-column TMA boxes: program::stage_plan) gives way to the
    // most slices that keep them whole, so a hidden size like Qwen2.5-0.5B's
    // (896 = 4 x 224) does not send O-proj to the per-token fallback. An
    // explicit --o-split-k / --down-split-k, and the compiler's own default
    // below (targets without a choice), are taken as given.
    const int given = is_o ? b.p.h.options.o_split_k : b.p.h.options.down_split_k;
    if (given == 0 && S > 1 && b.p.h.batch > 1)
      while (S > 1 && (K % S != 0 || (K / S) % program::kMmBoxCols != 0)) --S;
    if (S <= 0) S = is_o ? int(c.n_kv_heads) : (K >= 4096 ? 4 : 1);
    KEEL_CHECK(S <= K, "compiler: ", op.name, " split-K ", S, " exceeds K = ", K);
    uint16_t o = begin_op(op.name.c_str(), Opcode::MatvecResidual, op.layer);
    const int32_t in = b.id(op.inputs.at(0)), W_ = b.id(op.weight("W")),
                  bias = b.id_or_none(op.weight("bias"));
    // Units: S slices of R rows; slice j covers k in [j*K/S, (j+1)*K/S).
    const uint64_t unit_bytes = uint64_t((K + S - 1) / S) * es;
    water_fill_lanes(slice_cuts(R * S, R), unit_bytes, [&](int worker, int64_t u0, int64_t u1, int b0, int b1) {
      const int64_t j = u0 / R;
      TaskDesc t = tile_task(Opcode::MatvecResidual, o, op.layer, u0 - j * R, u1 - j * R, j * K / S, (j + 1) * K / S);
      t.b0 = b0, t.b1 = b1;
      t.flags = S > 1 ? kFlagAtomicAccumulate : 0;
      ops::MatvecResidualOperands v;
      v.a = in;
      v.weight = W_;
      v.bias = t.k0 == 0 ? bias : -1;
      v.x = b.p.h.buf_x;
      v.to(t);
      t.weight_bytes = uint64_t(t.row1 - t.row0) * uint64_t(t.k1 - t.k0) * es;
      emit(t, worker);
    });
    end_op();
  }

  void gate_up(const graph::Op& op) {
    uint16_t o = begin_op("gate_up", Opcode::GateUp, op.layer);
    const int64_t I = c.intermediate;
    water_fill_lanes({0, I}, uint64_t(2 * c.hidden) * es, [&](int worker, int64_t u0, int64_t u1, int b0, int b1) {
      TaskDesc t = tile_task(Opcode::GateUp, o, op.layer, u0, u1, 0, c.hidden);
      t.b0 = b0, t.b1 = b1;
      ops::GateUpOperands v;
      v.x = b.id(op.inputs.at(0));
      v.norm_w = b.id_or_none(op.weight("norm"));
      v.gate_w = b.id(op.weight("gate_W"));
      v.up_w = b.id(op.weight("up_W"));
      v.gate_bias = b.id_or_none(op.weight("gate_bias"));
      v.up_bias = b.id_or_none(op.weight("up_bias"));
      v.out = b.id(op.outputs.at(0));
      v.to(t);
      t.weight_bytes = uint64_t(u1 - u0) * 2 * c.hidden * es;
      emit(t, worker);
    });
    end_op();
  }

  void lm_head(const graph::Op& op) {
    uint16_t o = begin_op("lm_head", Opcode::LmHead, -1);
    int tile = 0;
    water_fill(c.vocab, c.vocab, uint64_t(c.hidden) * es, [&](int worker, int64_t u0, int64_t u1) {
      TaskDesc t = tile_task(Opcode::LmHead, o, -1, u0, u1, 0, c.hidden);
      ops::LmHeadOperands v;
      v.x = b.id(op.inputs.at(0));
      v.norm_w = b.id_or_none(op.weight("norm"));
      v.weight = b.id(op.weight("W"));
      v.logits = b.p.h.buf_logits;
      v.argmax = b.p.h.buf_argmax;
      v.tile = tile++;
      v.to(t);
      t.weight_bytes = uint64_t(u1 - u0) * c.hidden * es;
      emit(t, worker);
    });
    end_op();
    b.p.h.n_lm_tiles = tile;
    BufferDesc& am = b.p.buffers[b.p.h.buf_argmax];
    am.cols = 2 * tile;
    am.count = uint64_t(b.p.h.batch) * 2 * tile;
  }

  // The normed rows of a batch Program, to the least-loaded workers (each
  // task reads x[b] and writes its bf16 rows): one task per sequence, or with
  // more lanes than workers (a long prefill chunk) blocks of ceil(lanes /
  // workers) lanes, one round of tasks (a task a lane cost its fixed cost
  // again for each, and split every buffer it touches into rows of one lane
  // for the dependency pass).
  void rms_norm(const graph::Op& op) {
    uint16_t o = begin_op(op.name.c_str(), Opcode::RmsNorm, op.layer);
    const int B = b.p.h.batch, n = (B + W - 1) / W;
    for (int bb = 0; bb < B; bb += n) {
      TaskDesc t = seq_task(Opcode::RmsNorm, o, op.layer, bb);
      t.b1 = std::min(bb + n, B);
      ops::RmsNormOperands v;
      v.x = b.id(op.inputs.at(0));
      v.norm_w = b.id(op.weight("norm"));
      v.out = b.id(op.outputs.at(0));
      v.to(t);
      emit(t, least_loaded(), double(t.b1 - t.b0) * double(c.hidden) * 6 / b.bytes_per_us_per_worker);
    }
    end_op();
  }

  void step() {
    uint16_t o = begin_op("step", Opcode::Step, -1);
    for (int bb = 0; bb < b.p.h.batch; ++bb) {
      TaskDesc t = seq_task(Opcode::Step, o, -1, bb);
      ops::StepOperands v;
      const bool prefill = program::is_prefill_lane(b.p.h, bb);  // no LM head: nothing to sample
      v.logits = prefill ? -1 : b.p.h.buf_logits;
      v.argmax = prefill ? -1 : b.p.h.buf_argmax;
      v.embed = b.p.h.buf_embed;
      v.x = b.p.h.buf_x;
      v.state = b.p.h.buf_state;
      v.tokens = b.p.h.buf_tokens;
      v.ring = b.p.h.buf_ring;
      v.control = b.p.h.buf_control;
      v.n_lm_tiles = b.p.h.n_lm_tiles;
      v.to(t);
      t.weight_bytes = uint64_t(c.hidden) * es;  // one embedding row
      emit(t, least_loaded());
    }
    end_op();
  }
};

}  // namespace

void partition(Build& b) {
  KEEL_CHECK(b.p.tasks.empty(), "compiler: partition ran twice");
  const model::ModelConfig& c = b.fused.config;
  Partitioner pt{b, c, b.opt.workers, dtype_size(c.dtype), 0, 0};
  b.load_us.assign(size_t(b.opt.workers), 0.0);
  // Operator-level readiness: an operator starts after the last writer of
  // what it reads and after the last writer and readers of what it writes.
  std::unordered_map<std::string, double> written, read;
  for (const graph::Op& op : b.fused.ops) {
    pt.ready = 0;
    for (const std::string& in : op.inputs) pt.ready = std::max(pt.ready, written[in]);
    for (const std::string& out : op.outputs) pt.ready = std::max({pt.ready, written[out], read[out]});
    pt.op_finish = pt.ready;
    if (op.kind == kFusedQkv) pt.qkv(op);  // (an if chain: the fused kinds are not graph::OpKind enumerators)
    else if (op.kind == graph::OpKind::Attention) pt.attention(op);
    else if (op.kind == kMatvecResidual) pt.matvec_residual(op);
    else if (op.kind == kFusedGateUp) pt.gate_up(op);
    else if (op.kind == kFusedLmHead) {
      if (program::n_decode_lanes(b.p.h) > 0) pt.lm_head(op);  // prefill lanes sample nothing
    }
    else if (op.kind == graph::OpKind::Step) pt.step();
    else if (op.kind == graph::OpKind::RmsNorm) pt.rms_norm(op);
    else fail("compiler: partition got unfused operator ", kind_name(op.kind), " '", op.name, "' (run fuse first)");
    for (const std::string& in : op.inputs) read[in] = std::max(read[in], pt.op_finish);
    for (const std::string& out : op.outputs) {
      written[out] = pt.op_finish;
      read[out] = 0;
    }
  }
  b.p.h.n_tasks = uint32_t(b.p.tasks.size());
  b.p.h.n_ops = uint32_t(b.p.ops.size());
}

}  // namespace keel::compiler
