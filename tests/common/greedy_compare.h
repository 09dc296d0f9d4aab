// Logits of two greedy runs of the same sequences (two executors, or two
// Programs), position by position, up to where the runs' tokens part.
//
// Why not every position: a run feeds its own argmax back as the next input,
// so where the two executors' logits put two tokens in a near tie (random
// weights make them common: the synthetic 2-layer Llama of the GPU tests has
// top-two gaps of 0.001-0.005 on logits of ~2 at batch 64), a summation order
// that differs by one bf16 ulp picks the other token, and from there on the
// two sequences run different inputs: logits then differ by O(1) for a reason
// that is no bug. Such a divergence passed for a bug from 2026-12-04 to -05
// ("O-proj k-slices give wrong logits at batch 64"). So: the positions before
// the runs part are compared with the caller's tolerance; at the position
// where they part, the token `got` chose must be a near tie in `want`'s
// logits (want[got's token] >= max - tie_tol * max(1, |max|)); the positions
// after it are not compared. A real bug (a missing wait, a wrong head, stale
// K/V) still shows: it breaks the tolerance before any divergence, or parts
// the tokens where no tie is.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "exec/common/run.h"
#include "common/rel_err.h"

namespace keel::testing {

struct GreedyComparison {
  double worst = 0;     // worst relative logits error over the compared positions
  int parted = 0;       // sequences whose tokens parted at a near tie
  std::string failure;  // empty: every check held; else the first one that did not
};

/// Compares `got` with `want` (the oracle), runs of `seqs` with
/// capture_logits (row t of a sequence's logits follows token kv_filled + t).
/// `tol`: the relative logits error allowed per position; `tie_tol`: how near
/// the top a token `got` picked where the runs part must be in `want`'s
/// logits, relative to the top logit's magnitude (at least 1).
inline GreedyComparison compare_greedy_logits(const exec::RunResult& got, const exec::RunResult& want,
                                              const std::vector<exec::Sequence>& seqs, int64_t vocab, double tol,
                                              double tie_tol) {
  GreedyComparison r;
  const size_t V = size_t(vocab);
  auto fail = [&](std::string why) {
    if (r.failure.empty()) r.failure = std::move(why);
  };
  if (got.seqs.size() != seqs.size() || want.seqs.size() != seqs.size()) {
    fail("the runs have " + std::to_string(got.seqs.size()) + " and " + std::to_string(want.seqs.size()) +
         " sequences, not " + std::to_string(seqs.size()));
    return r;
  }
  for (size_t b = 0; b < seqs.size(); ++b) {
    const exec::SequenceOutput &g = got.seqs[b], &w = want.seqs[b];
    const std::string where = "sequence " + std::to_string(b);
    // Row of the logits that chose generated token k.
    const int64_t first = int64_t(seqs[b].prompt.size()) - 1 - seqs[b].kv_filled;
    size_t k = 0;  // generated tokens equal so far
    while (k < g.tokens.size() && k < w.tokens.size() && g.tokens[k] == w.tokens[k]) ++k;
    const bool parted = k < g.tokens.size() && k < w.tokens.size();
    if (!parted && g.tokens.size() != w.tokens.size()) {
      fail(where + ": " + std::to_string(g.tokens.size()) + " tokens against " + std::to_string(w.tokens.size()) +
           " (the same ones up to there)");
      continue;
    }
    // Rows 0 .. last are compared: up to and including the row where they part.
    const int64_t rows = int64_t(std::min(g.logits.size(), w.logits.size()) / V);
    const int64_t last = parted ? first + int64_t(k) : rows - 1;
    if (g.logits.size() != w.logits.size() && !parted) fail(where + ": logits of different lengths");
    for (int64_t t = 0; t <= last && t < rows; ++t) {
      const double e = rel_err(&g.logits[size_t(t) * V], &w.logits[size_t(t) * V], V);
      r.worst = std::max(r.worst, e);
      if (!(e < tol)) fail(where + " position " + std::to_string(t) + ": logits rel err " + std::to_string(e));
    }
    if (!parted) continue;
    if (last >= rows) {
      fail(where + ": tokens part at generated token " + std::to_string(k) + " but no logits were captured there");
      continue;
    }
    const float* wl = &w.logits[size_t(last) * V];
    const float top = *std::max_element(wl, wl + V), mine = wl[size_t(g.tokens[k])];
    if (double(top) - double(mine) > tie_tol * std::max(1.0, std::abs(double(top))))
      fail(where + ": tokens part at generated token " + std::to_string(k) + " (" + std::to_string(g.tokens[k]) +
           " against " + std::to_string(w.tokens[k]) + ") where the oracle's logits are no near tie: top " +
           std::to_string(top) + ", the other pick " + std::to_string(mine));
    else
      ++r.parted;
  }
  return r;
}

}  // namespace keel::testing
