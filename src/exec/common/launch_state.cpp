// write_launch_state: see launch_state.h.
#include "exec/common/launch_state.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "program/rules.h"

namespace keel::exec {

using program::BufferKind;
using program::Control;
using program::SeqState;

std::vector<int> sequence_lanes(const program::ProgramHeader& h, const std::vector<Sequence>& seqs, const char* who) {
  const int64_t D = program::n_decode_lanes(h), T = program::lanes_per_seq(h), G = (h.batch - D) / T;
  std::vector<int> lanes(seqs.size());
  int64_t nd = 0, np = 0;
  for (size_t k = 0; k < seqs.size(); ++k) {
    const bool pre = D == 0 || seqs[k].prefill_only;
    KEEL_CHECK(!seqs[k].prefill_only || T > 1, who, ": sequence ", k,
               " is prefill-only, but the Program has no prefill lanes");
    KEEL_CHECK(pre || np == 0, who, ": sequence ", k, " decodes after a prefill-only sequence (decoding ones come first)");
    if (pre) {
      KEEL_CHECK(np < G, who, ": ", np + 1, " prefill sequences for a Program of ", G, " group(s) of ", T,
                 " prefill lanes");
      lanes[k] = int(D + np++ * T);
    } else {
      KEEL_CHECK(nd < D, who, ": ", nd + 1, " decoding sequences for a Program of ", D, " decode lanes");
      lanes[k] = int(nd++);
    }
  }
  return lanes;
}

std::vector<int32_t> launch_state_buffers(const program::ProgramHeader& h) {
  return {h.buf_page_table, h.buf_control, h.buf_state, h.buf_tokens, h.buf_x};
}

void write_launch_state(const program::Program& p, const std::vector<Sequence>& seqs, const RunOptions& opt,
                        uint8_t* ws, const std::function<void(int32_t, float*)>& embed, const char* who) {
  std::memset(ws, 0, p.h.workspace_bytes);
  for (const program::BufferDesc& b : p.buffers)
    if (BufferKind(b.kind) == BufferKind::Activation)
      std::memset(ws + b.offset, 0xff, b.count * dtype_size(DType(b.dtype)));
  write_launch_state(p, seqs, opt, [&](int32_t id) { return ws + p.buffer(id).offset; }, embed, who);
}

void write_launch_state(const program::Program& p, const std::vector<Sequence>& seqs, const RunOptions& opt,
                        const std::function<uint8_t*(int32_t)>& at,
                        const std::function<void(int32_t, float*)>& embed, const char* who) {
  const auto& h = p.h;
  const int B = h.batch;
  const int32_t idle_page = opt.idle_page;
  KEEL_CHECK(!seqs.empty(), who, ": no sequences to run");
  const std::vector<int> first = sequence_lanes(h, seqs, who);
  KEEL_CHECK(opt.eos_ids.size() <= size_t(program::kMaxEos), who, ": at most ", program::kMaxEos, " eos ids");
  KEEL_CHECK(opt.max_steps >= 0, who, ": max_steps must be >= 0");
  // The sequence of each lane (-1: idle).
  std::vector<int> seq_of(size_t(B), -1);
  for (size_t k = 0; k < seqs.size(); ++k)
    for (int64_t i = 0; i < program::lane_width(h, first[k]); ++i) seq_of[size_t(first[k] + i)] = int(k);
  // A lane uses the pages of its sequence's KV slot (Sequence::kv_slot, else
  // the sequence of its lanes: the identity for decode Programs). A decode
  // run's lanes (idle ones too) append at their positions: only a run with
  // prefill lanes may name another slot, each sequence its own.
  const int64_t slots = h.n_pages / h.pages_per_seq;
  auto slot_of = [&](size_t k) {
    return seqs[k].kv_slot >= 0 ? int64_t(seqs[k].kv_slot) : program::lane_sequence(h, first[k]);
  };
  const bool named = !seqs[0].pages.empty();  // the sequences name their pages (an allocator's)
  KEEL_CHECK(idle_page < h.n_pages, who, ": idle page ", idle_page, " outside the ", h.n_pages, " KV pages");
  for (size_t k = 0; k < seqs.size(); ++k) {
    KEEL_CHECK(seqs[k].pages.empty() != named, who, ": sequence ", k,
               named ? " names no KV pages (every sequence of a run names them, or none)"
                     : " names KV pages (every sequence of a run names them, or none)");
    if (named) {
      KEEL_CHECK(int64_t(seqs[k].pages.size()) == h.pages_per_seq, who, ": sequence ", k, " names ",
                 seqs[k].pages.size(), " KV pages, the page table's row holds ", h.pages_per_seq);
      for (int32_t pg : seqs[k].pages)
        KEEL_CHECK(pg >= 0 && pg < h.n_pages && pg != idle_page, who, ": sequence ", k, " KV page ", pg,
                   pg == idle_page ? " is the idle page" : cat(" outside the ", h.n_pages, " KV pages"));
      KEEL_CHECK(seqs[k].kv_slot < 0, who, ": sequence ", k, " names both its KV pages and a KV slot");
      continue;
    }
    const int64_t a = slot_of(k);
    KEEL_CHECK(a < slots, who, ": sequence ", k, " kv_slot ", a, " outside the ", slots, " KV sequences of the cache");
    KEEL_CHECK(h.seq_lanes > 1 || a == int64_t(k), who, ": sequence ", k, " kv_slot ", a,
               " (a decode run's sequence k uses KV slot k; kv_slot is for runs with prefill lanes)");
    for (size_t k2 = 0; k2 < k; ++k2)
      KEEL_CHECK(a != slot_of(k2), who, ": sequences ", k2, " and ", k, " share KV slot ", a);
  }
  const bool all_lanes = std::find(seq_of.begin(), seq_of.end(), -1) == seq_of.end();
  KEEL_CHECK(!named || all_lanes || idle_page >= 0, who,
             ": a run whose sequences name their KV pages and leaves lanes idle needs an idle page");
  int32_t* pt = reinterpret_cast<int32_t*>(at(h.buf_page_table));
  for (int64_t b = 0; b < B; ++b) {
    const int k = seq_of[size_t(b)];
    int32_t* row = pt + b * h.pages_per_seq;
    if (k >= 0 && named) {
      std::copy(seqs[size_t(k)].pages.begin(), seqs[size_t(k)].pages.end(), row);
    } else if (k < 0 && idle_page >= 0) {
      std::fill(row, row + h.pages_per_seq, idle_page);
    } else {
      const int64_t slot = k >= 0 ? slot_of(size_t(k)) : program::lane_sequence(h, b) % slots;
      for (int64_t j = 0; j < h.pages_per_seq; ++j) row[j] = int32_t(slot * h.pages_per_seq + j);
    }
  }
  Control ctl{};
  ctl.n_eos = int32_t(opt.eos_ids.size());
  for (size_t i = 0; i < opt.eos_ids.size(); ++i) ctl.eos[i] = opt.eos_ids[i];
  int max_steps = 0;
  for (int k = 0; k < int(seqs.size()); ++k) {
    const Sequence& q = seqs[size_t(k)];
    const std::string name = cat(who, ": sequence ", k);
    program::check_prompt_fits(int64_t(q.prompt.size()), h.max_context, name.c_str());
    KEEL_CHECK(q.max_new >= 1, name, " max_new must be >= 1");
    for (int32_t id : q.prompt)
      KEEL_CHECK(id >= 0 && id < h.vocab, name, " token ", id, " outside the vocabulary of ", h.vocab);
    program::validate(q.sampling);
    const int64_t P = int64_t(q.prompt.size());
    KEEL_CHECK(q.kv_filled >= 0 && q.kv_filled < P, name, " kv_filled ", q.kv_filled, " outside [0, ", P, ")");
    // Decode: from kv_filled to the end. Prefill: positions [kv_filled, P - 1), L a step.
    const int64_t L = program::lane_width(h, first[size_t(k)]);
    max_steps = std::max(max_steps, L > 1 ? int((P - 1 - q.kv_filled + L - 1) / L) : int(P - 1 - q.kv_filled) + q.max_new);
  }
  for (int b = 0; b < B; ++b) {
    const int k = seq_of[size_t(b)];
    SeqState s{};
    if (k < 0) {  // an idle lane: done from the start
      s.done = 1;
      s.prompt_len = 1;
    } else {
      const Sequence& q = seqs[size_t(k)];
      const int64_t P = int64_t(q.prompt.size()), L = program::lane_width(h, b), lane = b - first[size_t(k)];
      // Prefill lane `lane` starts at kv_filled + lane (the positions before
      // kv_filled are in the cache already); a lane past the prompt's last
      // position but one has nothing to do.
      const int64_t start = L > 1 ? std::min<int64_t>(q.kv_filled + lane, P - 1) : q.kv_filled;
      s.done = L > 1 && q.kv_filled + lane >= P - 1 ? 1 : 0;
      int32_t* tokens = reinterpret_cast<int32_t*>(at(h.buf_tokens)) + int64_t(b) * h.max_context;
      std::copy(q.prompt.begin(), q.prompt.end(), tokens);
      s.pos = int32_t(L > 1 ? q.kv_filled + lane : start);
      s.prompt_len = int32_t(P);
      s.token = q.prompt[size_t(start)];
      s.max_new = q.max_new;
      s.temperature = q.sampling.temperature;
      s.top_k = q.sampling.top_k;
      s.top_p = q.sampling.top_p;
      s.min_p = q.sampling.min_p;
      s.repetition_penalty = q.sampling.repetition_penalty;
      s.seed_lo = uint32_t(q.sampling.seed);
      s.seed_hi = uint32_t(q.sampling.seed >> 32);
      s.draw0 = q.draws_before;
      s.want_logprob = q.logprobs ? 1 : 0;
      embed(s.token, reinterpret_cast<float*>(at(h.buf_x)) + int64_t(b) * h.hidden);
    }
    std::memcpy(at(h.buf_state) + sizeof(SeqState) * size_t(b), &s, sizeof s);
  }
  ctl.max_steps = opt.max_steps > 0 ? std::min(max_steps, opt.max_steps) : max_steps;
  std::memcpy(at(h.buf_control), &ctl, sizeof ctl);
}

std::vector<KvCopy> kv_sequence_copies(const program::Program& src, int src_seq, const program::Program& dst,
                                       int dst_seq, int64_t positions, const char* who) {
  const auto &a = src.h, &b = dst.h;
  KEEL_CHECK(a.n_layers == b.n_layers && a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim &&
                 a.page_size == b.page_size,
             who, ": the two Programs cache K/V in different shapes");
  KEEL_CHECK(positions >= 0 && positions <= a.max_context && positions <= b.max_context, who, ": ", positions,
             " positions do not fit the contexts ", a.max_context, " and ", b.max_context);
  KEEL_CHECK(src_seq >= 0 && int64_t(src_seq + 1) * a.pages_per_seq <= a.n_pages && dst_seq >= 0 &&
                 int64_t(dst_seq + 1) * b.pages_per_seq <= b.n_pages,
             who, ": sequence ", src_seq, " or ", dst_seq, " outside the KV caches");
  std::vector<KvCopy> out;
  if (positions == 0) return out;
  const uint64_t page_bytes = uint64_t(a.n_kv_heads) * a.page_size * a.head_dim * 2;  // bf16
  const uint64_t pages = uint64_t((positions + a.page_size - 1) / a.page_size);
  for (size_t i = 0; i < src.buffers.size(); ++i) {
    const program::BufferDesc& s = src.buffers[i];
    if (BufferKind(s.kind) != BufferKind::Kv) continue;
    const int32_t d = dst.find_buffer(s.name_view());
    KEEL_CHECK(d >= 0 && BufferKind(dst.buffer(d).kind) == BufferKind::Kv && dst.buffer(d).dtype == s.dtype &&
                   s.dtype == uint8_t(DType::BF16),
               who, ": KV buffer '", s.name_view(), "' has no bf16 twin in the other Program");
    out.push_back({int32_t(i), d, uint64_t(src_seq) * a.pages_per_seq * page_bytes,
                   uint64_t(dst_seq) * b.pages_per_seq * page_bytes, pages * page_bytes});
  }
  KEEL_CHECK(!out.empty(), who, ": the Program has no KV buffers");
  return out;
}

std::vector<KvCopy> kv_page_copies(const program::Program& p, int32_t from, int32_t to, const char* who) {
  const auto& h = p.h;
  KEEL_CHECK(from >= 0 && from < h.n_pages && to >= 0 && to < h.n_pages, who, ": KV page copy ", from, " -> ", to,
             " outside the ", h.n_pages, " pages");
  std::vector<KvCopy> out;
  if (from == to) return out;
  const uint64_t page_bytes = uint64_t(h.n_kv_heads) * h.page_size * h.head_dim * 2;  // bf16
  for (size_t i = 0; i < p.buffers.size(); ++i) {
    const program::BufferDesc& b = p.buffers[i];
    if (BufferKind(b.kind) != BufferKind::Kv) continue;
    KEEL_CHECK(b.dtype == uint8_t(DType::BF16), who, ": KV buffer '", b.name_view(), "' is not bf16");
    out.push_back({int32_t(i), int32_t(i), uint64_t(from) * page_bytes, uint64_t(to) * page_bytes, page_bytes});
  }
  return out;
}

void check_kv_shareable(const program::Program& a, const program::Program& b, const char* who) {
  KEEL_CHECK(a.h.kv_bytes == b.h.kv_bytes && a.h.page_size == b.h.page_size && a.h.n_pages == b.h.n_pages, who,
             ": the KV caches differ (", a.h.n_pages, " and ", b.h.n_pages,
             " pages): compile the Program with kv_sequences = the other's sequences to share one");
  for (const program::BufferDesc& k : a.buffers) {
    if (BufferKind(k.kind) != BufferKind::Kv) continue;
    const int32_t id = b.find_buffer(k.name_view());
    KEEL_CHECK(id >= 0 && b.buffer(id).offset == k.offset && b.buffer(id).count == k.count &&
                   b.buffer(id).dtype == k.dtype,
               who, ": KV buffer '", k.name_view(), "' is laid out differently in the other Program");
  }
}

void check_program_model(const program::Program& p, const model::ModelConfig& cfg, const std::string& model_dir,
                         const char* who) {
  const auto& h = p.h;
  KEEL_CHECK(h.hidden == cfg.hidden && h.vocab == cfg.vocab && h.n_layers == cfg.n_layers &&
                 h.n_heads == cfg.n_heads && h.n_kv_heads == cfg.n_kv_heads && h.head_dim == cfg.head_dim &&
                 h.intermediate == cfg.intermediate,
             who, ": the Program was compiled for different model dimensions than ", model_dir);
}

}  // namespace keel::exec
