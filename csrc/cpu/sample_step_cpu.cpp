// Reverse step on CPU. Per row, one streaming pass draws from the exponential race
// argmin_y E_y / w_y (E ~ Exp(1) in fp64) using exponential jumps: the weights' running sum decides
// which element next beats the current best, so only ~log(V) fp64 uniforms are drawn per row and
// the pass costs about one vectorised exp over the row (docs/kernels.md#reverse-step; docs/sedd.md#reverse-step).
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/library.h>

#include "api/api.h"
#include "cpu/vec_utils.h"
#include "pysedd/math.h"
#include "pysedd/params.h"
#include "pysedd/rng.h"

namespace pysedd {
namespace cpu {
namespace {

constexpr int64_t kBlock = 128;

// Exponential race with jumps. The current winner has time T = E/w; the next element to beat it is
// where a rate-T Poisson process on the cumulative-weight axis first fires (Q below), and its time
// is then Exp(w) truncated to [0, T). Same law as drawing every E_y; negative or zero weights never win.
struct Race {
  RowRng& rng;
  double T = std::numeric_limits<double>::infinity();
  double Q = 0.0;
  int64_t best = -1;

  void feed(double w, int64_t idx) {
    if (!(w > 0.0)) return;
    if (best >= 0) {
      Q -= w;
      if (Q > 0.0) return;
      T = -std::log1p(rng.uniform() * std::expm1(-w * T)) / w;
    } else {
      T = rng.exponential() / w;
    }
    best = idx;
    Q = rng.exponential() / T;
  }

  void feed_block(const float* w, int64_t n, double block_sum, int64_t base) {
    if (best >= 0 && Q > block_sum) {
      Q -= block_sum;
      return;
    }
    for (int64_t i = 0; i < n; ++i) feed(w[i], base + i);
  }
};

// Streams weights wv/ws(s_y) for y in [a, b) into the race; returns their sum.
template <typename T, typename WV, typename WS>
double race_segment(const T* s, int64_t a, int64_t b, Race& race, WV&& wv, WS&& ws) {
  alignas(64) float buf[kBlock];
  double total = 0.0;
  for (int64_t i = a; i < b; i += kBlock) {
    const int64_t n = std::min(kBlock, b - i);
    fVec acc(0.f);
    float tail = 0.f;
    int64_t k = 0;
    for_each_float(
        s + i, n,
        [&](fVec v) {
          const fVec w = wv(v);
          w.store(buf + k);
          k += fVec::size();
          acc = acc + w;
        },
        [&](float v) {
          const float w = ws(v);
          buf[k++] = w;
          tail += w;
        });
    const double block_sum = static_cast<double>(hsum(acc)) + tail;
    total += block_sum;
    race.feed_block(buf, n, block_sum, i);
  }
  return total;
}

template <typename T>
double race_exp(const T* s, int64_t a, int64_t b, Race& race) {
  return race_segment(s, a, b, race, [](fVec v) { return v.exp(); }, [](float v) { return std::exp(v); });
}

template <typename T>
int64_t step_row(const ReverseStepParams& p, int64_t row) {
  const int64_t V = p.V, N = p.n_real;
  const int64_t x = p.x[row];
  if (p.frozen && p.frozen[row]) return x;
  if (p.graph == kAbsorb && x != N) return x;  // unmasked tokens never change
  const T* s = static_cast<const T*>(p.log_score) + row * V;
  const double coef = p.coef[row / p.L];
  RowRng rng(p.seed, static_cast<uint64_t>(row), p.offset);
  Race race{rng};

  if (p.graph == kAbsorb) {
    // masked row: w_y = c*e^{s_y} (y < N), w_M = A - c*sum; the race picks y, one more uniform unmasks.
    const double sum = race_exp(s, 0, N, race);
    if (p.predictor == kDenoise) return race.best >= 0 ? race.best : 0;
    const double c = p.predictor == kEuler ? coef : std::expm1(coef);
    const double stay = p.predictor == kEuler ? 1.0 : std::exp(static_cast<double>(static_cast<float>(s[N])));
    const double p_unmask = std::min(1.0, c * sum / stay);
    const double u = rng.uniform();
    return (race.best >= 0 && u < p_unmask) ? race.best : N;
  }

  if (p.predictor == kEuler) {
    // w_y = h*e^{s_y}/N (y != x), w_x = 1 - sum: move with probability min(1, h*sum/N).
    double sum = 0.0;
    for_segments_excluding(V, x, x, [&](int64_t a, int64_t b) { sum += race_exp(s, a, b, race); });
    const double p_move = std::min(1.0, coef * sum / static_cast<double>(N));
    const double u = rng.uniform();
    return (race.best >= 0 && u < p_move) ? race.best : x;
  }

  // uniform analytic / denoise: w = stag(score, D) * trans(x, D), a = e^{-D}; needs sum_y e^{s_y} first.
  fVec acc(0.f);
  float tail = 0.f;
  for_each_float(s, V, [&](fVec v) { acc = acc + v.exp(); }, [&](float v) { tail += std::exp(v); });
  const double S = static_cast<double>(hsum(acc)) + tail;
  const double Nd = static_cast<double>(N);
  const double a = std::exp(-coef);
  const double k = (a - 1.0) * S / (Nd * a);
  const float alpha = static_cast<float>((1.0 - a) / (Nd * a));
  const float beta = static_cast<float>((1.0 - a) / Nd * k);
  const fVec av(alpha), bv(beta), zero(0.f);
  for_segments_excluding(V, x, x, [&](int64_t lo, int64_t hi) {
    race_segment(
        s, lo, hi, race, [&](fVec v) { return at::vec::maximum(zero, at::vec::fmadd(v.exp(), av, bv)); },
        [&](float v) { return std::max(0.f, std::exp(v) * alpha + beta); });
  });
  const double sx = std::exp(static_cast<double>(static_cast<float>(s[x])));
  race.feed((a + (1.0 - a) / Nd) * (sx / a + k), x);
  return race.best >= 0 ? race.best : x;
}

}  // namespace
}  // namespace cpu

void reverse_step_cpu(const ReverseStepParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      p.out[row] = p.dtype == kBFloat16 ? cpu::step_row<c10::BFloat16>(p, row) : cpu::step_row<float>(p, row);
    }
  });
}

TORCH_LIBRARY_IMPL(pysedd, CPU, m) { StepBinding<&reverse_step_cpu>::register_in(m); }

}  // namespace pysedd
