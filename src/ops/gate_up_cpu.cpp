// GateUp's CPU twin (see gate_up.h): bf16 normed input, fp32 dots, bf16 h;
// each weight row read once for all the task's tokens.
#include <cmath>
#include <vector>

#include "exec/cpu/kernels_common.h"
#include "ops/gate_up.h"

namespace keel::ops {

using namespace exec::cpu;

void GateUp::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  const auto& h = c.p->h;
  const int64_t H = h.hidden, I = h.intermediate;
  const int nb = t.b1 - t.b0;
  std::vector<float> n(size_t(nb * H)), gs(static_cast<size_t>(nb)), us(static_cast<size_t>(nb));
  for (int i = 0; i < nb; ++i) normed_input(c, o.x, o.norm_w, t.b0 + i, H, &n[size_t(i * H)]);
  WeightRows gate(c, o.gate_w, H), up(c, o.up_w, H);
  for (int64_t r = t.row0; r < t.row1; ++r) {
    gate.dots(r, 0, H, n.data(), H, nb, gs.data());
    up.dots(r, 0, H, n.data(), H, nb, us.data());
    for (int i = 0; i < nb; ++i) {
      float g = gs[size_t(i)], u = us[size_t(i)];
      if (o.gate_bias >= 0) g += load(c, o.gate_bias, size_t(r));
      if (o.up_bias >= 0) u += load(c, o.up_bias, size_t(r));
      c.as<uint16_t>(o.out)[(t.b0 + i) * I + r] = f32_to_bf16(g / (1.0f + std::exp(-g)) * u);
    }
  }
}

}  // namespace keel::ops
