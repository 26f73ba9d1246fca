// Score entropy on CPU: one streaming pass over V per row, at::parallel_for over rows (grain 1).
// Forward, backward and the weighted forward+gradient share one row kernel (kLoss / kGrad).
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <algorithm>
#include <cmath>

#include <torch/library.h>

#include "api/api.h"
#include "cpu/vec_utils.h"
#include "pysedd/math.h"
#include "pysedd/params.h"

namespace pysedd {
namespace cpu {
namespace {

// Sum over a segment of r*phi(s - log r) (or e^s when r == 0), writing gscale*d/ds into g when kGrad.
template <typename T, bool kLoss, bool kGrad>
double segment(const T* s, T* g, int64_t n, float r, float gscale) {
  fVec acc(0.f);
  float tail = 0.f;
  if (r == 0.f) {
    const fVec gv(gscale);
    auto fv = [&](fVec v) {
      const fVec e = v.exp();
      if constexpr (kLoss) acc = acc + e;
      return e * gv;
    };
    auto fs = [&](float v) {
      const float e = std::exp(v);
      if constexpr (kLoss) tail += e;
      return e * gscale;
    };
    if constexpr (kGrad) map_float(s, g, n, fv, fs); else for_each_float(s, n, fv, fs);
    return static_cast<double>(hsum(acc)) + tail;
  }
  const float lr = std::log(r), rg = r * gscale;
  const fVec lrv(lr), rgv(rg);
  auto fv = [&](fVec v) {
    const fVec u = v - lrv;
    const fVec em1 = u.expm1();
    if constexpr (kLoss) acc = acc + (em1 - u);
    return em1 * rgv;
  };
  auto fs = [&](float v) {
    const float u = v - lr;
    const float em1 = std::expm1(u);
    if constexpr (kLoss) tail += em1 - u;
    return em1 * rg;
  };
  if constexpr (kGrad) map_float(s, g, n, fv, fs); else for_each_float(s, n, fv, fs);
  return static_cast<double>(r) * (static_cast<double>(hsum(acc)) + tail);
}

template <typename T, bool kLoss, bool kGrad>
void score_entropy_rows(const ScoreEntropyParams& p, int64_t begin, int64_t end) {
  const int64_t V = p.V, N = p.n_real;
  for (int64_t row = begin; row < end; ++row) {
    const T* s = static_cast<const T*>(p.log_score) + row * V;
    T* g = kGrad ? static_cast<T*>(p.grad) + row * V : nullptr;
    const int64_t x = p.xt[row], x0 = p.x0[row];
    const RowRatios rr = row_ratios(p.graph, p.sigma[row / p.L], x, x0, N);
    const float scale = p.row_scale ? p.row_scale[row] : 1.f;
    if (!rr.active) {
      if constexpr (kLoss) p.loss[row] = 0.f;
      if constexpr (kGrad) std::fill(g, g + V, static_cast<T>(0.f));
      continue;
    }
    const float gscale = static_cast<float>(scale * rr.weight);
    // y = x0 in double (its ratio differs, and for absorb it carries the large 1/e factor)
    const bool x0_separate = (p.graph == kAbsorb) || (x != x0);
    double total = 0.0;
    if (x0_separate) {
      const double u = static_cast<double>(static_cast<float>(s[x0])) - std::log(rr.r_x0);
      if constexpr (kLoss) total += rr.r_x0 * phi(u);
      if constexpr (kGrad) g[x0] = static_cast<T>(static_cast<float>(gscale * rr.r_x0 * std::expm1(u)));
    }
    // every other y: for absorb y < N (the MASK column has zero rate), for uniform y != x
    const int64_t ex_self = p.graph == kAbsorb ? N : x;
    const int64_t n_cols = p.graph == kAbsorb ? N : V;
    for_segments_excluding(n_cols, x0_separate ? x0 : ex_self, ex_self, [&](int64_t a, int64_t b) {
      total += segment<T, kLoss, kGrad>(s + a, kGrad ? g + a : nullptr, b - a, static_cast<float>(rr.r_rest),
                                        gscale);
    });
    if constexpr (kGrad) {
      if (p.graph == kUniform) g[x] = static_cast<T>(0.f);        // no rate into the current state
      for (int64_t y = n_cols; y < V; ++y) g[y] = static_cast<T>(0.f);  // absorb: the MASK column
    }
    if constexpr (kLoss) p.loss[row] = static_cast<float>(scale * rr.weight * total);
  }
}

template <typename T>
void dispatch_rows(const ScoreEntropyParams& p, int64_t b, int64_t e) {
  if (p.loss && p.grad) score_entropy_rows<T, true, true>(p, b, e);
  else if (p.grad) score_entropy_rows<T, false, true>(p, b, e);
  else score_entropy_rows<T, true, false>(p, b, e);
}

}  // namespace
}  // namespace cpu

void score_entropy_cpu(const ScoreEntropyParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t b, int64_t e) {
    if (p.dtype == kBFloat16) cpu::dispatch_rows<c10::BFloat16>(p, b, e);
    else cpu::dispatch_rows<float>(p, b, e);
  });
}

// Fused-output-layer helper (absorb, raw logits under scale_by_sigma, docs/kernels.md#fused-output-layer):
// bracket = (1/N) sum_{y != x0, y < N} e^{raw_y} + phi(raw_x0 - log N); gradient in place.
void absorb_raw_cpu(const AbsorbRawParams& p) {
  const int64_t V = p.V, N = p.n_real;
  const double logN = std::log(static_cast<double>(N));
  at::parallel_for(0, p.rows, 1, [&](int64_t begin, int64_t end) {
    auto rows = [&](auto* base) {
      using T = std::remove_pointer_t<decltype(base)>;
      for (int64_t row = begin; row < end; ++row) {
        T* z = base + row * V;
        const int64_t x0 = p.x0[row];
        const double w = p.row_weight[row];
        const double u = static_cast<double>(static_cast<float>(z[x0])) - logN;
        double total = cpu::segment<T, true, true>(z, z, x0, 0.f, static_cast<float>(w / N)) / N;
        total += cpu::segment<T, true, true>(z + x0 + 1, z + x0 + 1, N - x0 - 1, 0.f, static_cast<float>(w / N)) / N;
        z[x0] = static_cast<T>(static_cast<float>(w * std::expm1(u)));
        for (int64_t y = N; y < V; ++y) z[y] = static_cast<T>(0.f);
        p.loss[row] = static_cast<float>(w * (total + phi(u)));
      }
    };
    if (p.dtype == kBFloat16) rows(static_cast<c10::BFloat16*>(p.logits));
    else rows(static_cast<float*>(p.logits));
  });
}

TORCH_LIBRARY_IMPL(pysedd, CPU, m) { LossBinding<&score_entropy_cpu, &absorb_raw_cpu>::register_in(m); }

}  // namespace pysedd
