// K/V cache comparison the CPU-executor tests share.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "core/dtype.h"
#include "exec/cpu/executor.h"

namespace keel::testing {

/// Worst |a - b| over positions [0, n) held by `pages` (a page-table row: page
/// pages[pos / page_size] holds pos), relative to the largest |b|, for every
/// layer's K and V cache (b's buffers found by name).
inline double worst_kv_err(const exec::cpu::CpuExecutor& a, const exec::cpu::CpuExecutor& b,
                           const std::vector<int32_t>& pages, int64_t n) {
  const program::Program& p = a.program();
  const auto& h = p.h;
  double worst = 0;
  for (size_t id = 0; id < p.buffers.size(); ++id) {
    if (program::BufferKind(p.buffers[id].kind) != program::BufferKind::Kv) continue;
    const uint16_t* x = reinterpret_cast<const uint16_t*>(a.buffer_data(int32_t(id)));
    const uint16_t* y =
        reinterpret_cast<const uint16_t*>(b.buffer_data(b.program().find_buffer(p.buffers[id].name_view())));
    double diff = 0, mag = 0;
    for (int64_t pos = 0; pos < n; ++pos)
      for (int64_t kvh = 0; kvh < h.n_kv_heads; ++kvh) {
        // [n_pages][nkv][page_size][hd]
        const int64_t page = pages[size_t(pos / h.page_size)];
        const int64_t off = ((page * h.n_kv_heads + kvh) * h.page_size + pos % h.page_size) * h.head_dim;
        for (int64_t i = 0; i < h.head_dim; ++i) {
          const float u = bf16_to_f32(x[off + i]), v = bf16_to_f32(y[off + i]);
          diff = std::max(diff, double(std::fabs(u - v)));
          mag = std::max(mag, double(std::fabs(v)));
        }
      }
    worst = std::max(worst, diff / std::max(mag, 1e-6));
  }
  return worst;
}

/// The same for sequence 0 of a cache by KV slots (pages 0, 1, ...).
inline double worst_kv_err(const exec::cpu::CpuExecutor& a, const exec::cpu::CpuExecutor& b, int64_t n) {
  std::vector<int32_t> pages(size_t(a.program().h.pages_per_seq));
  std::iota(pages.begin(), pages.end(), 0);
  return worst_kv_err(a, b, pages, n);
}

}  // namespace keel::testing
