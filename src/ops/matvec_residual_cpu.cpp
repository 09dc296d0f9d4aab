// MatvecResidual's CPU twin (see matvec_residual.h): fp32 dots over the k-slice,
// added to the fp32 residual (atomically under split-K); each weight row read
// once for all the task's tokens.
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
  const int nb = t.b1 - t.b0;
  std::vector<float> av(size_t(nb * a.cols)), ys(static_cast<size_t>(nb));  // [k0, k1) of each token's a, in fp32
  for (int i = 0; i < nb; ++i) {
    const uint16_t* ab = c.as<uint16_t>(o.a) + (t.b0 + i) * a.cols;
    for (int64_t k = t.k0; k < t.k1; ++k) av[size_t(i * a.cols + k)] = bf16_to_f32(ab[k]);
  }
  WeightRows wr(c, o.weight, w.cols);
  for (int64_t r = t.row0; r < t.row1; ++r) {
    wr.dots(r, t.k0, t.k1, av.data(), a.cols, nb, ys.data());
    for (int i = 0; i < nb; ++i) {
      float acc = ys[size_t(i)];
      if (o.bias >= 0) acc += load(c, o.bias, size_t(r));
      float& xr = c.as<float>(o.x)[(t.b0 + i) * x.cols + r];
      if (t.flags & program::kFlagAtomicAccumulate)
        std::atomic_ref<float>(xr).fetch_add(acc, std::memory_order_relaxed);
      else
        xr += acc;
    }
  }
}

}  // namespace keel::ops
