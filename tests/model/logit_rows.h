// Comparing logit rows with a reference: the worst row's max|got - ref| / max|ref| and top-1 agreement.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace kestrel::test {

struct RowStats {
  double max_rel = 0;  // max |a - b| / max |b| over a row, worst row
  int top1_same = 0, rows = 0;
};

inline void compare_row(const float* got, const float* ref, int64_t V, RowStats& s) {
  double max_ref = 0, max_diff = 0;
  int64_t ag = 0, ar = 0;
  for (int64_t v = 0; v < V; ++v) {
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[v])));
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[v]) - ref[v]));
    if (got[v] > got[ag]) ag = v;
    if (ref[v] > ref[ar]) ar = v;
  }
  s.max_rel = std::max(s.max_rel, max_diff / std::max(max_ref, 1e-6));
  s.top1_same += ag == ar;
  ++s.rows;
}

}  // namespace kestrel::test
