// Scalar helpers shared by the CPU and CUDA kernels (host + device).
// Formulas: docs/kernels.md#kernel-maths, docs/sedd.md#score-entropy, docs/sedd.md#reverse-step.
// All per-row constants are formed in double.
#pragma once
#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>

namespace pysedd {

enum GraphType : int64_t { kAbsorb = 0, kUniform = 1 };
enum Predictor : int64_t { kEuler = 0, kAnalytic = 1, kDenoise = 2 };

// e_sigma = e^sigma - 1, with expm1 below 0.5 as in the reference.
C10_HOST_DEVICE inline double esigm1(double sigma) {
  return sigma < 0.5 ? ::expm1(sigma) : ::exp(sigma) - 1.0;
}

// phi(u) = e^u - 1 - u >= 0: the score-entropy summand r*phi(s - log r) without cancellation.
C10_HOST_DEVICE inline double phi(double u) { return ::expm1(u) - u; }

// Per-row constants of the score entropy.  For a target ratio r_y the summand is r_y*phi(s_y - log r_y)
// and its derivative r_y*expm1(s_y - log r_y) = e^{s_y} - r_y.
struct RowRatios {
  double r_rest;   // ratio for every y not in {x, x0} (0 for absorb: the summand is then e^{s_y})
  double r_x0;     // ratio at y = x0 (equal to r_rest when x == x0 for uniform)
  double weight;   // w_{x,y}: 1 for absorb, 1/N for uniform
  bool active;     // absorb rows with x != MASK contribute nothing
};

// absorb: r = 1/e at x0, 0 elsewhere (phi-form: sum_{y != x0} e^{s_y} + r*phi(s_x0 - log r));
// uniform: x == x0 -> r = e/(e+N) everywhere; x != x0 -> r_x0 = 1 + N/e, 1 elsewhere.
C10_HOST_DEVICE inline RowRatios row_ratios(int64_t graph, double sigma, int64_t x, int64_t x0,
                                            int64_t n_real) {
  const double e = esigm1(sigma);
  RowRatios rr;
  if (graph == kAbsorb) {
    rr.active = (x == n_real);
    rr.r_rest = 0.0;  // the limit r*phi(s - log r) -> e^s as r -> 0
    rr.r_x0 = 1.0 / e;
    rr.weight = 1.0;
  } else {
    const double N = static_cast<double>(n_real);
    rr.active = true;
    rr.weight = 1.0 / N;
    if (x == x0) {
      rr.r_rest = e / (e + N);
      rr.r_x0 = rr.r_rest;
    } else {
      rr.r_rest = 1.0;
      rr.r_x0 = 1.0 + N / e;
    }
  }
  return rr;
}

// 53-bit uniform in (0, 1) from two 32-bit words (never 0 or 1, so -log is finite and positive).
C10_HOST_DEVICE inline double uniform53(uint32_t a, uint32_t b) {
  const uint64_t k = (static_cast<uint64_t>(a >> 5) << 26) | static_cast<uint64_t>(b >> 6);
  return (static_cast<double>(k) + 0.5) * (1.0 / 9007199254740992.0);
}

}  // namespace pysedd
