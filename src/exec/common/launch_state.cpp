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

void write_launch_state(const program::Program& p, const std::vector<Sequence>& seqs,
                        const std::vector<int32_t>& eos_ids, uint8_t* ws,
                        const std::function<void(int32_t, float*)>& embed, const char* who) {
  const auto& h = p.h;
  const int B = h.batch;
  KEEL_CHECK(!seqs.empty() && int(seqs.size()) <= B, who, ": ", seqs.size(),
             " sequences for a Program compiled for batch ", B);
  KEEL_CHECK(eos_ids.size() <= size_t(program::kMaxEos), who, ": at most ", program::kMaxEos, " eos ids");
  std::memset(ws, 0, h.workspace_bytes);
  for (const program::BufferDesc& b : p.buffers)
    if (BufferKind(b.kind) == BufferKind::Activation)
      std::memset(ws + b.offset, 0xff, b.count * dtype_size(DType(b.dtype)));
  auto at = [&](int32_t buf) { return ws + p.buffer(buf).offset; };
  int32_t* pt = reinterpret_cast<int32_t*>(at(h.buf_page_table));
  for (int64_t i = 0; i < int64_t(B) * h.pages_per_seq; ++i) pt[i] = int32_t(i);
  Control ctl{};
  ctl.n_eos = int32_t(eos_ids.size());
  for (size_t i = 0; i < eos_ids.size(); ++i) ctl.eos[i] = eos_ids[i];
  int max_steps = 0;
  for (int b = 0; b < B; ++b) {
    SeqState s{};
    if (b >= int(seqs.size())) {  // an idle slot: done from the start
      s.done = 1;
      s.prompt_len = 1;
    } else {
      const Sequence& q = seqs[size_t(b)];
      program::check_prompt_fits(int64_t(q.prompt.size()), h.max_context, cat(who, ": sequence ", b).c_str());
      KEEL_CHECK(q.max_new >= 1, who, ": sequence ", b, " max_new must be >= 1");
      for (int32_t id : q.prompt)
        KEEL_CHECK(id >= 0 && id < h.vocab, who, ": sequence ", b, " token ", id, " outside the vocabulary of ",
                   h.vocab);
      int32_t* tokens = reinterpret_cast<int32_t*>(at(h.buf_tokens)) + int64_t(b) * h.max_context;
      std::copy(q.prompt.begin(), q.prompt.end(), tokens);
      s.prompt_len = int32_t(q.prompt.size());
      s.token = q.prompt[0];
      s.max_new = q.max_new;
      program::validate(q.sampling);
      s.temperature = q.sampling.temperature;
      s.top_k = q.sampling.top_k;
      s.top_p = q.sampling.top_p;
      s.min_p = q.sampling.min_p;
      s.repetition_penalty = q.sampling.repetition_penalty;
      s.seed_lo = uint32_t(q.sampling.seed);
      s.seed_hi = uint32_t(q.sampling.seed >> 32);
      embed(q.prompt[0], reinterpret_cast<float*>(at(h.buf_x)) + int64_t(b) * h.hidden);
      max_steps = std::max(max_steps, int(q.prompt.size()) - 1 + q.max_new);
    }
    std::memcpy(at(h.buf_state) + sizeof(SeqState) * size_t(b), &s, sizeof s);
  }
  ctl.max_steps = max_steps;
  std::memcpy(at(h.buf_control), &ctl, sizeof ctl);
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
