// QkvProj's CPU twin (see qkv_proj.h): rounds where the device body does
// (bf16 normed input, bf16 raw rows; fp32 accumulation); each weight row read
// once for all the task's tokens.
#include <vector>

#include "exec/cpu/kernels_common.h"
#include "ops/qkv_proj.h"

namespace keel::ops {

using namespace exec::cpu;

void QkvProj::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  const auto& h = c.p->h;
  const int64_t H = h.hidden, width = program::qkv_width(h), off = o.part_row0;
  const int nb = t.b1 - t.b0;
  std::vector<float> n(size_t(nb * H)), ys(static_cast<size_t>(nb));
  for (int i = 0; i < nb; ++i) normed_input(c, o.x, o.norm_w, t.b0 + i, H, &n[size_t(i * H)]);
  WeightRows w(c, o.weight, H);
  for (int64_t r = t.row0; r < t.row1; ++r) {
    w.dots(r - off, 0, H, n.data(), H, nb, ys.data());
    for (int i = 0; i < nb; ++i) {
      float y = ys[size_t(i)];
      if (o.bias >= 0) y += load(c, o.bias, size_t(r - off));
      c.as<uint16_t>(o.out)[(t.b0 + i) * width + r] = f32_to_bf16(y);
    }
  }
}

}  // namespace keel::ops
