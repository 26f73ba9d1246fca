// Reverse step on CUDA: one block per row on the current stream. Every element draws its own fp64
// exponential E_y from Philox keyed by (seed, row, offset, y) and the block takes argmax log w_y - log E_y
// (the exponential race in log space). Same law as the CPU kernel's jump race, different stream of numbers.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "api/api.h"
#include "cuda/block_reduce.cuh"
#include "pysedd/math.h"
#include "pysedd/params.h"
#include "pysedd/rng.h"

namespace pysedd {
namespace cuda {
namespace {

// -log E_y for element y: its own pair of 32-bit words in the row's Philox stream.
__device__ inline double neg_log_exponential(const ReverseStepParams& p, int64_t row, int64_t y) {
  RowRng rng(p.seed, static_cast<uint64_t>(row), p.offset, static_cast<uint64_t>(y) >> 1);
  if (y & 1) rng.uniform();
  return -log(rng.exponential());
}

// One extra uniform per row (the stay/move decision), past every element's words.
__device__ inline double row_uniform(const ReverseStepParams& p, int64_t row) {
  RowRng rng(p.seed, static_cast<uint64_t>(row), p.offset, static_cast<uint64_t>(p.V) + 1);
  return rng.uniform();
}

template <typename T>
__global__ void __launch_bounds__(kThreads) reverse_step_kernel(ReverseStepParams p) {
  const int64_t row = blockIdx.x;
  const int64_t V = p.V, N = p.n_real;
  const int64_t x = p.x[row];
  CUDA_KERNEL_ASSERT(x >= 0 && x < V);
  if ((p.frozen && p.frozen[row]) || (p.graph == kAbsorb && x != N)) {
    if (threadIdx.x == 0) p.out[row] = x;
    return;
  }
  const T* s = static_cast<const T*>(p.log_score) + row * V;
  const double coef = p.coef[row / p.L];
  const bool two_pass = p.graph == kUniform && p.predictor != kEuler;

  if (!two_pass) {
    // weights proportional to e^{s_y} over y < N (absorb) or y != x (uniform euler)
    const int64_t n_cols = p.graph == kAbsorb ? N : V;
    KeyIdx best{0.0, -1};
    float acc = 0.f;
    for (int64_t y = threadIdx.x; y < n_cols; y += blockDim.x) {
      if (p.graph == kUniform && y == x) continue;
      const float v = static_cast<float>(s[y]);
      acc += expf(v);
      best = better(best, KeyIdx{static_cast<double>(v) + neg_log_exponential(p, row, y), y});
    }
    const double sum = block_sum(acc);
    best = block_argmax(best);
    if (threadIdx.x != 0) return;
    if (p.graph == kAbsorb) {
      if (p.predictor == kDenoise) {
        p.out[row] = best.idx >= 0 ? best.idx : 0;
        return;
      }
      const double c = p.predictor == kEuler ? coef : expm1(coef);
      const double stay = p.predictor == kEuler ? 1.0 : exp(static_cast<double>(static_cast<float>(s[N])));
      const double p_unmask = fmin(1.0, c * sum / stay);
      p.out[row] = (best.idx >= 0 && row_uniform(p, row) < p_unmask) ? best.idx : N;
    } else {
      const double p_move = fmin(1.0, coef * sum / static_cast<double>(N));
      p.out[row] = (best.idx >= 0 && row_uniform(p, row) < p_move) ? best.idx : x;
    }
    return;
  }

  // uniform analytic / denoise: w = stag * trans needs sum_y e^{s_y} first
  float acc = 0.f;
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) acc += expf(static_cast<float>(s[y]));
  const double S = block_sum(acc);
  const double Nd = static_cast<double>(N);
  const double a = exp(-coef);
  const double k = (a - 1.0) * S / (Nd * a);
  const float alpha = static_cast<float>((1.0 - a) / (Nd * a));
  const float beta = static_cast<float>((1.0 - a) / Nd * k);
  KeyIdx best{0.0, -1};
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    const float v = static_cast<float>(s[y]);
    const double w = y == x ? (a + (1.0 - a) / Nd) * (exp(static_cast<double>(v)) / a + k)
                            : static_cast<double>(fmaxf(0.f, expf(v) * alpha + beta));
    if (w > 0.0) best = better(best, KeyIdx{log(w) + neg_log_exponential(p, row, y), y});
  }
  best = block_argmax(best);
  if (threadIdx.x == 0) p.out[row] = best.idx >= 0 ? best.idx : x;
}

}  // namespace
}  // namespace cuda

void reverse_step_cuda(const ReverseStepParams& p) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(p.device));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (p.dtype == kBFloat16) cuda::reverse_step_kernel<c10::BFloat16><<<p.rows, cuda::kThreads, 0, stream>>>(p);
  else cuda::reverse_step_kernel<float><<<p.rows, cuda::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

TORCH_LIBRARY_IMPL(pysedd, CUDA, m) { StepBinding<&reverse_step_cuda>::register_in(m); }

}  // namespace pysedd
