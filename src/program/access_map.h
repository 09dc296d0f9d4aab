// The address spaces the dependency pass and the checker replay every task's
// accesses over (task_accesses), each place in them holding a payload `Seg`
// (its last writers and the readers since).
//
// KV spaces are one interval map each. The workspace (space 0, bytes) is kept
// in two dimensions: a multi-token task touches the same columns of a block of
// lanes (AccessSink::rows: one Access of `nrows` rows `pitch` bytes apart), and
// a one-dimensional byte map gave that block one segment a lane, each split
// again wherever an earlier task's columns ended (a down_proj task of a
// 256-lane prefill Program visited ~30 segments a lane). Here every workspace
// buffer's bytes form a grid of its rows (BufferDesc rows x cols), and a grid
// is an interval map over rows whose segments (runs of rows) each hold an
// interval map over columns (bytes in a row), so that block is one rectangle
// and costs a visit per (row segment, column segment).
//
// The memory plan puts buffers of disjoint lifetimes on the same bytes, and
// the order between their tasks (WAR, WAW) must survive. Buffers of the same
// offset and row geometry share one grid. A grid that overlaps grids of other
// geometries (the `overlaps`) receives every access to those bytes as well,
// converted into its own rows and columns (a row at a time), so every grid
// holds the whole history of each of its bytes and the replay finds the same
// producers as a byte map would (sets, which the callers deduplicate). Rows
// outside, columns inside: such a conversion splits only the rows it touches
// (with columns outside, each converted row's ends split every row's columns:
// a 64-lane prefill Program took 46 s instead of 1). Grids of buffers no task
// accesses are left out.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "program/interval_map.h"
#include "program/program.h"

namespace keel::program {

template <class Seg>
class AccessMap {
 public:
  /// The grids of the buffers p's tasks access.
  explicit AccessMap(const Program& p) : AccessMap(p, accessed_buffers(p)) {}
  /// The grids of the buffers flagged in `accessed` (by buffer id); an access
  /// to another buffer is an error.
  AccessMap(const Program& p, const std::vector<uint8_t>& accessed) {
    grid_of_.assign(p.buffers.size(), -1);
    std::map<std::tuple<uint64_t, uint64_t, uint64_t>, int32_t> by_shape;
    for (size_t i = 0; i < p.buffers.size(); ++i) {
      const BufferDesc& b = p.buffers[i];
      const BufferKind k = BufferKind(b.kind);
      if ((k != BufferKind::Activation && k != BufferKind::State) || b.count == 0 || i >= accessed.size() ||
          !accessed[i])
        continue;
      const uint64_t es = dtype_size(DType(b.dtype)), bytes = b.count * es;
      uint64_t pitch = bytes;  // one row unless the buffer declares rows x cols
      if (b.rows > 0 && b.cols > 0 && uint64_t(b.rows) * uint64_t(b.cols) == b.count) pitch = uint64_t(b.cols) * es;
      const auto key = std::make_tuple(b.offset, pitch, bytes / pitch);
      auto it = by_shape.find(key);
      if (it == by_shape.end()) {
        it = by_shape.emplace(key, int32_t(grids_.size())).first;
        grids_.push_back(Grid{b.offset, pitch, bytes / pitch, {}, {}});
      }
      grid_of_[i] = it->second;
    }
    // Grids whose byte ranges intersect (sorted by base: a sweep).
    std::vector<int32_t> order(grids_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return grids_[a].base < grids_[b].base; });
    for (size_t i = 0; i < order.size(); ++i)
      for (size_t j = i + 1; j < order.size() && grids_[order[j]].base < grids_[order[i]].end(); ++j) {
        grids_[order[i]].overlaps.push_back(order[j]);
        grids_[order[j]].overlaps.push_back(order[i]);
      }
  }

  /// The workspace buffers some task of p accesses: only their grids need a
  /// history (the memory plan also places buffers that only some Programs use,
  /// e.g. attention partials in a prefill Program; every access to a byte
  /// they share with others would be converted into their grids for nothing).
  static std::vector<uint8_t> accessed_buffers(const Program& p) {
    std::vector<uint8_t> used(p.buffers.size(), 0);
    std::vector<Access> acc;
    for (const TaskDesc& t : p.tasks) {
      acc.clear();
      task_accesses(p, t, acc);
      for (const Access& a : acc)
        if (a.space == 0 && a.buffer >= 0 && size_t(a.buffer) < used.size()) used[size_t(a.buffer)] = 1;
    }
    return used;
  }

  /// Calls fn(seg, piece) for the segments that exactly cover access `a`'s
  /// bytes or units: in a KV space one interval map; in the workspace the
  /// access's buffer's grid and every overlapping grid that holds some of its
  /// bytes (so a place may be visited once per grid holding it). `piece` is
  /// the segment's part of the access, as an Access (lo, hi of its first row,
  /// pitch, nrows) for messages.
  template <class Fn>
  void cover(const Access& a, Fn fn) {
    if (a.space != 0) {
      kv_[a.space].cover(a.lo, a.hi, [&](uint64_t lo, Seg& s) {
        Access piece = a;
        piece.lo = lo, piece.hi = s.hi;
        fn(s, piece);
      });
      return;
    }
    KEEL_CHECK(a.buffer >= 0 && size_t(a.buffer) < grid_of_.size() && grid_of_[a.buffer] >= 0,
               "program: workspace access without its buffer");
    const int32_t own = grid_of_[a.buffer];
    visit(own, a, fn);
    if (grids_[own].overlaps.empty()) return;
    const uint64_t last = a.hi + (a.nrows > 1 ? (a.nrows - 1) * a.pitch : 0);  // the access's byte hull [a.lo, last)
    for (int32_t g : grids_[own].overlaps)
      if (a.lo < grids_[g].end() && grids_[g].base < last) visit(g, a, fn);
  }

 private:
  struct Row {  // a run of rows [key, hi) and their columns
    uint64_t hi = 0;
    IntervalMap<Seg> cols;
  };
  struct Grid {
    uint64_t base = 0, pitch = 0, nrows = 0;
    IntervalMap<Row> rows;
    std::vector<int32_t> overlaps;
    uint64_t end() const { return base + pitch * nrows; }
  };

  /// a's bytes inside grid g, as rectangles of rows x columns.
  template <class Fn>
  void visit(int32_t gi, const Access& a, Fn& fn) {
    Grid& g = grids_[gi];
    const uint64_t P = g.pitch;
    auto rect = [&](uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1) {
      g.rows.cover(r0, r1, [&](uint64_t rlo, Row& row) {
        row.cols.cover(c0, c1, [&](uint64_t clo, Seg& s) {
          Access piece = a;
          piece.lo = g.base + rlo * P + clo;
          piece.hi = g.base + rlo * P + s.hi;
          piece.pitch = P;
          piece.nrows = uint32_t(row.hi - rlo);
          fn(s, piece);
        });
      });
    };
    // One row of bytes [x0, x1) clipped to the grid: a partial first row, whole rows, a partial last row.
    auto bytes = [&](uint64_t x0, uint64_t x1) {
      x0 = std::max(x0, g.base), x1 = std::min(x1, g.end());
      if (x0 >= x1) return;
      uint64_t r0 = (x0 - g.base) / P, c0 = (x0 - g.base) % P;
      const uint64_t r1 = (x1 - g.base) / P, c1 = (x1 - g.base) % P;
      if (r0 == r1) return rect(r0, r0 + 1, c0, c1);
      if (c0) rect(r0, r0 + 1, c0, P), ++r0;
      if (r0 < r1) rect(r0, r1, 0, P);
      if (c1) rect(r1, r1 + 1, 0, c1);
    };
    if (a.nrows > 1 && a.pitch == P && a.lo >= g.base) {  // the same geometry: one rectangle
      const uint64_t r0 = (a.lo - g.base) / P, c0 = (a.lo - g.base) % P, c1 = c0 + (a.hi - a.lo);
      if (c1 <= P && r0 + a.nrows <= g.nrows) return rect(r0, r0 + a.nrows, c0, c1);
    }
    const uint64_t n = a.nrows > 1 ? a.nrows : 1;
    for (uint64_t i = 0; i < n; ++i) bytes(a.lo + i * a.pitch, a.hi + i * a.pitch);
  }

  std::vector<Grid> grids_;
  std::vector<int32_t> grid_of_;
  std::unordered_map<uint32_t, IntervalMap<Seg>> kv_;
};

}  // namespace keel::program
