// MatvecResidual's CPU twin (see matvec_residual.h): fp32 dots over the k-slice,
// added to the fp32 residual (atomically under split-K).
#include <atomic>
#include <vector>

#include "exec/cpu/kernels_common.h"
#include "ops/matvec_residual.h"

namespace keel::ops {

using namespace exec::cpu;

void MatvecResidual::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands o = Operands::from(t);
  const program::BufferDesc& a = c.p->buffer(o.a);
  const program::BufferDesc& w = c.p->buffer(o.weight);
  const program::BufferDesc& x = c.p->buffer(o.x);
  std::vector<float> av(static_cast<size_t>(a.cols));
  for (int b = t.b0; b < t.b1; ++b) {
    const uint16_t* ab = c.as<uint16_t>(o.a) + b * a.cols;
    for (int64_t k = t.k0; k < t.k1; ++k) av[size_t(k)] = bf16_to_f32(ab[k]);
    float* xb = c.as<float>(o.x) + b * x.cols;
    for (int64_t r = t.row0; r < t.row1; ++r) {
      float acc = dot_row(c.ptr[size_t(o.weight)], c.dtype[size_t(o.weight)], r, w.cols, t.k0, t.k1, av.data());
      if (o.bias >= 0) acc += load(c, o.bias, size_t(r));
      if (t.flags & program::kFlagAtomicAccumulate)
        std::atomic_ref<float>(xb[r]).fetch_add(acc, std::memory_order_relaxed);
      else
        xb[r] += acc;
    }
  }
}

}  // namespace keel::ops
