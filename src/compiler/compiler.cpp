// compile(): validates options, runs the passes in order (see compiler.h) and
// validates the result. Also the Build helpers the passes share.
#include "compiler/compiler.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "compiler/fuse.h"
#include "compiler/passes.h"
#include "core/error.h"
#include "model/rope.h"
#include "program/smem_plan.h"

namespace keel::compiler {

using namespace program;  // the passes build a Program

namespace {
/// Most tasks one Program may hold (as estimated before compiling): an
/// 80-layer model with 8 kv heads (Llama-3-70B) at batch 512 needs about
/// 420 thousand. The costliest shape allowed (16384 heads, 7 layers) took
/// 10 s and 0.6 GB to compile on a busy 2-core machine.
constexpr int64_t kMaxTasks = int64_t(1) << 19;
/// Matrix operators per layer (qkv, o, gate-up, down), counted twice for split-K.
constexpr int64_t kMatrixOpsPerLayer = 8;
}  // namespace

int32_t Build::id(const std::string& name) const {
  auto it = buf_id.find(name);
  KEEL_CHECK(it != buf_id.end(), "compiler: no buffer '", name, "'");
  return it->second;
}

int32_t Build::id_or_none(const std::string& name) const {
  if (name.empty()) return -1;
  auto it = buf_id.find(name);
  return it == buf_id.end() ? -1 : it->second;
}

Build begin_build(const graph::Graph& g, const CompileOptions& opt_in) {
  Build b;
  b.opt = opt_in;
  CompileOptions& o = b.opt;
  const model::ModelConfig& c = g.config;
  KEEL_CHECK(o.target.sms >= 1 && o.target.sms <= 65536, "compile: target '", o.target.name, "' has ", o.target.sms,
             " SMs");
  if (o.workers == 0) o.workers = o.target.sms;
  const bool wide = o.batch > 1 && program::mm_tokens(o.batch) > 16;  // the target's wide policy (plan_target)
  if (o.o_split_k == 0)
    o.o_split_k = wide ? o.target.batch_wide_o_split_k : o.batch > 1 ? o.target.batch_o_split_k : o.target.o_split_k;
  if (o.down_split_k == 0) o.down_split_k = wide ? o.target.batch_wide_down_split_k : o.target.down_split_k;
  if (o.row_align == 0) o.row_align = o.batch > 1 ? o.target.batch_row_align : o.target.row_align;
  if (o.max_context <= 0) o.max_context = int(c.max_position > 0 ? std::min<int64_t>(c.max_position, INT32_MAX) : 4096);
  KEEL_CHECK(o.workers >= 1 && o.workers <= 65536, "compile: --workers must be in [1, 65536], got ", o.workers);
  KEEL_CHECK(o.batch >= 1 && o.batch <= 4096, "compile: --batch must be in [1, 4096], got ", o.batch);
  KEEL_CHECK(o.batch == g.batch, "compile: the graph was built for batch ", g.batch, ", options say ", o.batch);
  KEEL_CHECK(o.max_context >= 2, "compile: --context must be >= 2, got ", o.max_context);
  KEEL_CHECK(o.prefill_chunk >= 0 && o.prefill_chunk <= 4096, "compile: --prefill-chunk must be in [0, 4096], got ",
             o.prefill_chunk);
  const bool prefill = o.prefill_chunk > 1;
  KEEL_CHECK(o.decode_lanes >= 0 && (o.decode_lanes == 0 || prefill), "compile: decode_lanes ", o.decode_lanes,
             " needs a prefill chunk of 2 lanes or more (a mixed Program)");
  KEEL_CHECK(!prefill || o.batch == o.decode_lanes + o.prefill_chunk, "compile: a ",
             o.decode_lanes > 0 ? cat("mixed Program of ", o.decode_lanes, " decode lanes and ") : std::string("prefill Program of "),
             o.prefill_chunk, " prefill lanes has batch ", o.decode_lanes + o.prefill_chunk, " (--batch ", o.batch, ")");
  KEEL_CHECK(!prefill || o.prefill_chunk < o.max_context, "compile: --prefill-chunk ", o.prefill_chunk,
             " must be below --context ", o.max_context);
  KEEL_CHECK(c.max_position <= 0 || o.max_context <= c.max_position, "compile: --context ",
             o.max_context, " exceeds the model's max_position_embeddings ", c.max_position);
  KEEL_CHECK(o.page_size >= 1, "compile: --page-size must be >= 1, got ", o.page_size);
  // Page and KV counts are int32 in the Program header: check them in int64 first.
  const int64_t pages = (int64_t(o.max_context) + o.page_size - 1) / o.page_size * o.batch;
  KEEL_CHECK(pages <= INT32_MAX && int64_t(o.max_context) * o.batch <= INT32_MAX, "compile: --context ",
             o.max_context, " x --batch ", o.batch, " is too large for one Program (at most 2^31 cached tokens)");
  KEEL_CHECK(o.row_align >= 1, "compile: row_align must be >= 1");
  KEEL_CHECK(o.bandwidth_GBps > 0 && o.task_overhead_us >= 0 && o.attn_task_us >= 0 && o.kv_append_us >= 0,
             "compile: bad cost model parameters");
  KEEL_CHECK(o.o_split_k >= 0 && o.down_split_k >= 0 && o.attn_chunks >= 0, "compile: negative split option");
  KEEL_CHECK(o.attn_min_chunk >= -1, "compile: attn_min_chunk must be -1 (auto), 0 (off) or a length, got ",
             o.attn_min_chunk);
  if (o.ring_len <= 0) o.ring_len = o.max_context;
  int C = o.attn_chunks;
  // A chunk per worker and kv head: the chunks of every (sequence, kv head)
  // one round of tasks over the workers; two rounds for batches in Programs
  // of more than 4096 positions. (Two rounds for every batch, the rule until
  // 2026-12-05, measured slower at context 512 in Programs of 4096: H100,
  // Qwen3-8B batch 8 9.47 ms/step with 4 chunks vs 8.92 with 2, batch 16
  // 10.75 with 2 vs 10.27 with 1; Llama-3.2-1B 2.41 vs 2.25 and 2.90 vs 2.72;
  // H200 with 64-row tasks, 8-11% a step at batch 8 and 16. But faster at
  // context 8192: H200, batch 8, 4 chunks vs 2, Qwen3-8B 11.79 vs 12.12 ms,
  // Llama-3.2-1B 3.39 vs 3.53.)
  //
  // Where that gives a batch Program of up to 4096 positions two chunks, one:
  // the batch variants' one-chunk task writes its output itself (no arrival
  // count, no partial read back), which beats twice the tasks of half the
  // length (H100, 2026-12-06, batch 8: Qwen3-8B 8.39 -> 8.29 ms/step at
  // context 512, 10.47 -> 10.28 at 2048; Llama-3.2-1B 2.05 -> 2.01, 2.75 ->
  // 2.69). Four stay four (batch 4: 7.88 ms against 8.08 with one).
  if (C == 0) {
    const bool long_ctx = o.batch > 1 && o.max_context > program::kShortContext;
    C = std::clamp((long_ctx ? 2 : 1) * o.workers / int(o.batch * c.n_kv_heads), 1, 32);
    if (o.batch > 1 && !long_ctx && C == 2) C = 1;
  }
  // A prefill Program's lanes read the positions the other lanes of their
  // sequence append in the same step: the appending chunk must be a task of
  // its own (attn_chunk_range with C >= 2), which the others wait for.
  if (prefill) C = std::max(C, 2);
  C = std::min(C, o.max_context);
  // Sizes config.json accepts can still ask for tens of millions of tasks
  // (minutes and tens of GB to compile): refuse those before building. Per
  // layer: the attention chunks, the q/k/v projection's tiles (which never
  // straddle a head), plus at most a tile per worker (or row) for each of the
  // few matrix operators (split-K may double that).
  const int64_t tiles = std::min<int64_t>(o.workers, c.q_dim() + c.hidden + c.intermediate);
  const int64_t per_layer = int64_t(o.batch) * c.n_kv_heads * C + c.n_heads + 2 * c.n_kv_heads +
                            kMatrixOpsPerLayer * tiles;
  KEEL_CHECK(c.n_layers * per_layer <= kMaxTasks, "compile: num_hidden_layers ", c.n_layers, " x about ", per_layer,
             " tasks per layer (num_attention_heads ", c.n_heads, ", num_key_value_heads ", c.n_kv_heads, ", --batch ",
             o.batch, ", --workers ", o.workers, ") exceeds the ", kMaxTasks, " tasks one Program may hold");
  b.fused = fuse(g);
  b.bytes_per_us_per_worker = o.bandwidth_GBps * 1e3 / double(o.workers);
  ProgramHeader& h = b.p.h;
  h.arch = int32_t(c.arch);
  h.n_layers = int32_t(c.n_layers);
  h.hidden = int32_t(c.hidden);
  h.intermediate = int32_t(c.intermediate);
  h.n_heads = int32_t(c.n_heads);
  h.n_kv_heads = int32_t(c.n_kv_heads);
  h.head_dim = int32_t(c.head_dim);
  h.vocab = int32_t(c.vocab);
  h.rms_eps = float(c.rms_eps);
  // transformers multiplies cos and sin by the RoPE attention factor (yarn), so
  // q and k after RoPE by it and every score by its square: folded into the
  // score scale, once, for every executor.
  const double rope_factor = model::rope_attention_factor(c);
  h.attn_scale = float(rope_factor * rope_factor / std::sqrt(double(c.head_dim)));
  h.sliding_window = int32_t(std::min<int64_t>(c.sliding_window, INT32_MAX));
  h.qk_norm = c.qk_norm;
  h.qkv_bias = c.qkv_bias;
  h.o_bias = c.o_bias;
  h.mlp_bias = c.mlp_bias;
  h.tie_embeddings = c.tie_embeddings;
  h.n_workers = o.workers;
  h.batch = o.batch;
  h.max_context = o.max_context;
  h.page_size = o.page_size;
  h.pages_per_seq = int32_t((int64_t(o.max_context) + o.page_size - 1) / o.page_size);
  h.seq_lanes = prefill ? o.prefill_chunk : 0;
  h.decode_lanes = prefill ? o.decode_lanes : 0;
  KEEL_CHECK(o.kv_sequences >= 0, "compile: kv_sequences must be >= 0");
  KEEL_CHECK(o.kv_pages >= 0 && (o.kv_pages == 0 || o.kv_sequences == 0),
             "compile: kv_pages must be >= 0, and not given with kv_sequences");
  KEEL_CHECK(o.kv_pages == 0 || o.kv_pages >= h.pages_per_seq, "compile: kv_pages ", o.kv_pages,
             " hold less than one sequence's ", h.pages_per_seq, " pages (context ", o.max_context, ", pages of ",
             o.page_size, ")");
  const int64_t kv_seqs = o.kv_sequences > 0 ? o.kv_sequences : int(program::n_lane_sequences(h));
  KEEL_CHECK(kv_seqs * h.pages_per_seq <= INT32_MAX, "compile: ", kv_seqs, " KV sequences of ", h.pages_per_seq,
             " pages are too many for one Program");
  h.n_pages = o.kv_pages > 0 ? o.kv_pages : int32_t(h.pages_per_seq * kv_seqs);
  h.ring_len = o.ring_len;
  h.n_chunks = C;
  // Even chunks with a minimum length, on request only (--attn-min-chunk):
  // at batch 8 / 16 and context 512 one chunk per (sequence, kv head) was
  // 5-8% faster a step than the 2-4 the rule above gives (H200, 2026-12-05),
  // but L = 1024 (the last chunk takes the history alone up to 1024
  // positions) measured no better than the rule on the H100 (batch 8 / 16,
  // contexts 512 and 4096, Qwen3-8B and Llama-3.2-1B, three rounds: -1.6% to
  // +3.6%, docs/performance.md): the empty chunks still run their q epilogue,
  // partial and merge. Never in prefill lanes (their appending chunks must be
  // tasks of their own); batch 1 never (the CUDA decode kernels leave the
  // even ranges out).
  if (!prefill && o.batch > 1) h.attn_min_chunk = std::max(o.attn_min_chunk, 0);
  h.opt_attn_min_chunk = opt_in.attn_min_chunk + 1;
  // The options as given (0 = the compiler's or the target's choice), so a
  // recompile for another target makes the same choices.
  program::OptionsDesc& r = h.options;
  r.workers = opt_in.workers;
  r.batch = o.batch;
  r.max_context = o.max_context;
  r.page_size = opt_in.page_size;
  r.ring_len = opt_in.ring_len;
  r.row_align = opt_in.row_align;
  r.o_split_k = opt_in.o_split_k;
  r.down_split_k = opt_in.down_split_k;
  r.attn_chunks = opt_in.attn_chunks;
  r.predict_context = opt_in.predict_context;
  r.prune_transitive = opt_in.prune_transitive;
  r.weight_dtype = int32_t(c.dtype);
  r.bandwidth_GBps = opt_in.bandwidth_GBps;
  r.task_overhead_us = opt_in.task_overhead_us;
  r.attn_task_us = opt_in.attn_task_us;
  r.kv_append_us = opt_in.kv_append_us;
  return b;
}

Program compile_graph(const graph::Graph& g, const CompileOptions& opt) {
  Build b = begin_build(g, opt);
  plan_buffers(b);
  partition(b);
  allocate_arenas(b);
  build_dependencies(b);
  place(b);
  b.p.h.n_buffers = uint32_t(b.p.buffers.size());
  plan_target(b.p, b.opt.target);
  b.p.validate();
  return std::move(b.p);
}

Program compile(const model::ModelConfig& cfg, const CompileOptions& opt) {
  CompileOptions o = opt;
  if (o.prefill_chunk > 1 && o.batch == 1) o.batch = o.decode_lanes + o.prefill_chunk;  // one sequence of T lanes
  return compile_graph(graph::build_decode_graph(cfg, o.batch), o);
}

int mixed_prefill_lanes(int decode_lanes, int prefill_chunk) {
  const int lanes = prefill_chunk - decode_lanes;
  return decode_lanes >= 2 && lanes >= 2 && lanes * 4 >= prefill_chunk ? lanes : 0;
}

CompileOptions options_of(const Program& p) {
  const program::OptionsDesc& r = p.h.options;
  CompileOptions o;
  o.target = target_of(p);
  o.workers = r.workers;
  o.batch = r.batch;
  o.prefill_chunk = p.h.seq_lanes;
  o.decode_lanes = p.h.decode_lanes;
  if (p.h.pages_per_seq > 0 && p.h.n_pages != p.h.pages_per_seq * program::n_lane_sequences(p.h)) {
    if (p.h.n_pages % p.h.pages_per_seq == 0) o.kv_sequences = p.h.n_pages / p.h.pages_per_seq;
    else o.kv_pages = p.h.n_pages;
  }
  o.max_context = r.max_context;
  o.page_size = r.page_size;
  o.ring_len = r.ring_len;
  o.row_align = r.row_align;
  o.o_split_k = r.o_split_k;
  o.down_split_k = r.down_split_k;
  o.attn_chunks = r.attn_chunks;
  o.attn_min_chunk = p.h.opt_attn_min_chunk - 1;
  o.predict_context = r.predict_context;
  o.prune_transitive = r.prune_transitive != 0;
  o.bandwidth_GBps = r.bandwidth_GBps;
  o.task_overhead_us = r.task_overhead_us;
  o.attn_task_us = r.attn_task_us;
  o.kv_append_us = r.kv_append_us;
  return o;
}

std::vector<uint64_t> bytes_per_worker(const Program& p) {
  std::vector<uint64_t> out(size_t(p.h.n_workers), 0);
  for (int w = 0; w < p.h.n_workers; ++w)
    for (const uint32_t* t = p.worker_begin(w); t != p.worker_end(w); ++t) out[w] += p.tasks[*t].weight_bytes;
  return out;
}

}  // namespace keel::compiler
