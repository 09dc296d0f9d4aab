// GateUp's CPU twin (see gate_up.h): bf16 normed input, fp32 dots, bf16 h.
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
  std::vector<float> n(static_cast<size_t>(H));
  for (int b = t.b0; b < t.b1; ++b) {
    normed_input(c, o.x, o.norm_w, b, H, n.data());
    uint16_t* out = c.as<uint16_t>(o.out) + b * I;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      float g = dot_row(c.ptr[size_t(o.gate_w)], c.dtype[size_t(o.gate_w)], r, H, 0, H, n.data());
      float u = dot_row(c.ptr[size_t(o.up_w)], c.dtype[size_t(o.up_w)], r, H, 0, H, n.data());
      if (o.gate_bias >= 0) g += load(c, o.gate_bias, size_t(r));
      if (o.up_bias >= 0) u += load(c, o.up_bias, size_t(r));
      out[r] = f32_to_bf16(g / (1.0f + std::exp(-g)) * u);
    }
  }
}

}  // namespace keel::ops
