// RmsNorm's CPU twin (see rms_norm.h): the same bf16 rounding as the norm the
// norm-matvecs fold in (rms_norm_bf16).
#include <vector>

#include "exec/cpu/kernels_common.h"
#include "ops/rms_norm.h"

namespace keel::ops {

using namespace exec::cpu;

void RmsNorm::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  const int64_t H = c.p->h.hidden;
  std::vector<float> n(static_cast<size_t>(H));
  for (int b = t.b0; b < t.b1; ++b) {
    rms_norm_bf16(c, c.as<float>(o.x) + b * H, o.norm_w, H, n.data());
    uint16_t* out = c.as<uint16_t>(o.out) + b * H;
    for (int64_t i = 0; i < H; ++i) out[i] = f32_to_bf16(n[size_t(i)]);
  }
}

}  // namespace keel::ops
