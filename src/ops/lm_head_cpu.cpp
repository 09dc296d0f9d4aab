// LmHead's CPU twin (see lm_head.h): fp32 logits of the tile's rows and the
// tile's (max, lowest argmax).
#include <cmath>
#include <cstring>
#include <vector>

#include "exec/cpu/kernels_common.h"
#include "ops/lm_head.h"

namespace keel::ops {

using namespace exec::cpu;

void LmHead::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  const auto& h = c.p->h;
  const int64_t H = h.hidden, V = h.vocab, T = h.n_lm_tiles;
  std::vector<float> n(static_cast<size_t>(H));
  for (int b = t.b0; b < t.b1; ++b) {
    normed_input(c, o.x, o.norm_w, b, H, n.data());
    float* logits = c.as<float>(o.logits) + b * V;
    float best = -INFINITY;
    int32_t best_i = t.row0;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      logits[r] = dot_row(c.ptr[size_t(o.weight)], c.dtype[size_t(o.weight)], r, H, 0, H, n.data());
      if (logits[r] > best) {
        best = logits[r];
        best_i = int32_t(r);
      }
    }
    float* part = c.as<float>(o.argmax) + (b * T + o.tile) * 2;
    part[0] = best;
    std::memcpy(&part[1], &best_i, 4);
  }
}

}  // namespace keel::ops
