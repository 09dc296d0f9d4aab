// PrefillAttention's CPU twin (see prefill_attention.h): per lane and q head,
// the q epilogue, fp32 scores and softmax over the lane's cached positions, the
// normalised output rounded to bf16.
#include <algorithm>
#include <cmath>
#include <vector>

#include "exec/cpu/kernels_common.h"
#include "ops/prefill_attention.h"

namespace keel::ops {

using namespace exec::cpu;

void PrefillAttention::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands op = Operands::from(t);
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads;
  const int kvh = op.kv_head;
  std::vector<float> q(static_cast<size_t>(hd)), o(static_cast<size_t>(hd));
  std::vector<float> s;
  for (int b = t.b0; b < t.b1; ++b) {
    const program::SeqState& st = c.as<program::SeqState>(op.state)[b];
    if (st.done) continue;
    int64_t p0 = 0, p1 = 0;
    prefill_attention_positions(h, t, st.pos, &p0, &p1);
    s.resize(size_t(std::max<int64_t>(p1 - p0, 1)));
    for (int64_t j = 0; j < g; ++j) {
      q_head(c, op.qkv, op.q_norm, b, kvh * g + j, st.pos, q.data());
      // (through the block's first lane's page-table row: a prompt's lanes share their pages)
      const float l = attend(c, op.k_cache, op.v_cache, t.b0, kvh, q.data(), p0, p1, s.data(), o.data()).second;
      uint16_t* out = c.as<uint16_t>(op.out) + int64_t(b) * h.n_heads * hd + (kvh * g + j) * hd;
      for (int64_t i = 0; i < hd; ++i) out[i] = f32_to_bf16(o[size_t(i)] / l);
    }
  }
}

}  // namespace keel::ops
