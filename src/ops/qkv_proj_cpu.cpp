// QkvProj's CPU twin (see qkv_proj.h): rounds where the device body does
// (bf16 normed input, bf16 raw rows; fp32 accumulation).
#include <vector>

#include "exec/cpu/kernels_common.h"
#include "ops/qkv_proj.h"

namespace keel::ops {

using namespace exec::cpu;

void QkvProj::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  const auto& h = c.p->h;
  const int64_t H = h.hidden, width = program::qkv_width(h), off = o.part_row0;
  std::vector<float> n(static_cast<size_t>(H));
  for (int b = t.b0; b < t.b1; ++b) {
    normed_input(c, o.x, o.norm_w, b, H, n.data());
    uint16_t* out = c.as<uint16_t>(o.out) + b * width;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      float y = dot_row(c.ptr[size_t(o.weight)], c.dtype[size_t(o.weight)], r - off, H, 0, H, n.data());
      if (o.bias >= 0) y += load(c, o.bias, size_t(r - off));
      out[r] = f32_to_bf16(y);
    }
  }
}

}  // namespace keel::ops
