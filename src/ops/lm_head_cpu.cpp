// LmHead's CPU twin (see lm_head.h): fp32 logits of the tile's rows and the
// tile's (max, lowest argmax); each weight row read once for all the task's
// tokens.
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
  const int nb = t.b1 - t.b0;
  std::vector<float> n(size_t(nb * H)), ys(static_cast<size_t>(nb)), best(static_cast<size_t>(nb), -INFINITY);
  std::vector<int32_t> best_i(static_cast<size_t>(nb), t.row0);
  for (int i = 0; i < nb; ++i) normed_input(c, o.x, o.norm_w, t.b0 + i, H, &n[size_t(i * H)]);
  WeightRows w(c, o.weight, H);
  for (int64_t r = t.row0; r < t.row1; ++r) {
    w.dots(r, 0, H, n.data(), H, nb, ys.data());
    for (int i = 0; i < nb; ++i) {
      const float y = ys[size_t(i)];
      c.as<float>(o.logits)[(t.b0 + i) * V + r] = y;
      if (y > best[size_t(i)]) {  // rows in order: the lowest index of the tile's max
        best[size_t(i)] = y;
        best_i[size_t(i)] = int32_t(r);
      }
    }
  }
  for (int i = 0; i < nb; ++i) {
    float* part = c.as<float>(o.argmax) + ((t.b0 + i) * T + o.tile) * 2;
    part[0] = best[size_t(i)];
    std::memcpy(&part[1], &best_i[size_t(i)], 4);
  }
}

}  // namespace keel::ops
