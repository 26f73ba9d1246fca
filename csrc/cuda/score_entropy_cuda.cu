// Score entropy and the fused-layer row step on CUDA: one block per row on the current stream, fp32
// accumulation, one pass over V, and their CUDA registrations.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "api/api.h"
#include "cuda/block_reduce.cuh"
#include "pysedd/math.h"
#include "pysedd/params.h"

namespace pysedd {
namespace cuda {
namespace {

template <typename T, bool kLoss, bool kGrad>
__global__ void __launch_bounds__(kThreads) score_entropy_kernel(ScoreEntropyParams p) {
  const int64_t row = blockIdx.x;
  const int64_t V = p.V, N = p.n_real;
  const T* s = static_cast<const T*>(p.log_score) + row * V;
  T* g = kGrad ? static_cast<T*>(p.grad) + row * V : nullptr;
  const int64_t x = p.xt[row], x0 = p.x0[row];
  CUDA_KERNEL_ASSERT(x >= 0 && x < V && x0 >= 0 && x0 < N);
  const RowRatios rr = row_ratios(p.graph, p.sigma[row / p.L], x, x0, N);
  const float scale = p.row_scale ? p.row_scale[row] : 1.f;
  if (!rr.active) {
    if (kLoss && threadIdx.x == 0) p.loss[row] = 0.f;
    if (kGrad)
      for (int64_t y = threadIdx.x; y < V; y += blockDim.x) g[y] = T(0.f);
    return;
  }
  const float gscale = static_cast<float>(scale * rr.weight);
  const bool x0_separate = (p.graph == kAbsorb) || (x != x0);
  const int64_t self = p.graph == kAbsorb ? N : x;
  const int64_t n_cols = p.graph == kAbsorb ? N : V;
  const float r = static_cast<float>(rr.r_rest);
  const float lr = r > 0.f ? logf(r) : 0.f;
  float acc = 0.f;
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    if (y >= n_cols || y == self) {
      if (kGrad) g[y] = T(0.f);
      continue;
    }
    if (x0_separate && y == x0) continue;
    const float v = static_cast<float>(s[y]);
    float d;
    if (r == 0.f) {  // absorb: summand e^{s_y}
      const float e = expf(v);
      if (kLoss) acc += e;
      d = e;
    } else {
      const float u = v - lr;
      const float em1 = expm1f(u);
      if (kLoss) acc += r * (em1 - u);
      d = r * em1;
    }
    if (kGrad) g[y] = T(d * gscale);
  }
  double total = 0.0;
  if (kLoss) total = block_sum(acc);
  if (threadIdx.x == 0) {
    if (x0_separate) {
      const double u = static_cast<double>(static_cast<float>(s[x0])) - log(rr.r_x0);
      if (kLoss) total += rr.r_x0 * phi(u);
      if (kGrad) g[x0] = T(static_cast<float>(gscale * rr.r_x0 * expm1(u)));
    }
    if (kLoss) p.loss[row] = static_cast<float>(scale * rr.weight * total);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) absorb_raw_kernel(AbsorbRawParams p) {
  const int64_t row = blockIdx.x;
  const int64_t V = p.V, N = p.n_real;
  T* z = static_cast<T*>(p.logits) + row * V;
  const int64_t x0 = p.x0[row];
  CUDA_KERNEL_ASSERT(x0 >= 0 && x0 < N);
  const double w = p.row_weight[row];
  const double u = static_cast<double>(static_cast<float>(z[x0])) - log(static_cast<double>(N));
  const float gs = static_cast<float>(w / N);
  float acc = 0.f;
  for (int64_t y = threadIdx.x; y < V; y += blockDim.x) {
    if (y == x0) continue;
    if (y >= N) {
      z[y] = T(0.f);
      continue;
    }
    const float e = expf(static_cast<float>(z[y]));
    acc += e;
    z[y] = T(e * gs);
  }
  const double total = block_sum(acc) / static_cast<double>(N);  // syncs: every thread has read z[x0]
  if (threadIdx.x == 0) {
    z[x0] = T(static_cast<float>(w * expm1(u)));
    p.loss[row] = static_cast<float>(w * (total + phi(u)));
  }
}

}  // namespace
}  // namespace cuda

void score_entropy_cuda(const ScoreEntropyParams& p) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(p.device));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto launch = [&](auto kernel) { kernel<<<p.rows, cuda::kThreads, 0, stream>>>(p); };
  if (p.dtype == kBFloat16) {
    if (p.loss && p.grad) launch(cuda::score_entropy_kernel<c10::BFloat16, true, true>);
    else if (p.grad) launch(cuda::score_entropy_kernel<c10::BFloat16, false, true>);
    else launch(cuda::score_entropy_kernel<c10::BFloat16, true, false>);
  } else {
    if (p.loss && p.grad) launch(cuda::score_entropy_kernel<float, true, true>);
    else if (p.grad) launch(cuda::score_entropy_kernel<float, false, true>);
    else launch(cuda::score_entropy_kernel<float, true, false>);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void absorb_raw_cuda(const AbsorbRawParams& p) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(p.device));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (p.dtype == kBFloat16) cuda::absorb_raw_kernel<c10::BFloat16><<<p.rows, cuda::kThreads, 0, stream>>>(p);
  else cuda::absorb_raw_kernel<float><<<p.rows, cuda::kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

TORCH_LIBRARY_IMPL(pysedd, CUDA, m) { LossBinding<&score_entropy_cuda, &absorb_raw_cuda>::register_in(m); }

}  // namespace pysedd
