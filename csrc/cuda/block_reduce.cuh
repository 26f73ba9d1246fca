// Block-wide reductions for the one-block-per-row kernels (blockDim.x = kThreads, a multiple of 32).
#pragma once
#include <cstdint>

namespace pysedd {
namespace cuda {

constexpr int kThreads = 256;

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result.
template <typename T>
__device__ inline T block_sum(T v) {
  __shared__ T partial[kThreads / 32];
  __shared__ T result;
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < kThreads / 32 ? partial[lane] : T(0);
    w = warp_sum(w);
    if (lane == 0) result = w;
  }
  __syncthreads();
  const T out = result;
  __syncthreads();  // partial/result can be reused by the next call
  return out;
}

struct KeyIdx {
  double key;
  int64_t idx;
};

// max key, smallest index on ties (deterministic); idx = -1 means no candidate.
__device__ inline KeyIdx better(KeyIdx a, KeyIdx b) {
  if (b.idx < 0) return a;
  if (a.idx < 0) return b;
  if (b.key > a.key || (b.key == a.key && b.idx < a.idx)) return b;
  return a;
}

__device__ inline KeyIdx block_argmax(KeyIdx v) {
  __shared__ double keys[kThreads / 32];
  __shared__ int64_t idxs[kThreads / 32];
  __shared__ KeyIdx result;
  for (int o = 16; o > 0; o >>= 1) {
    KeyIdx other{__shfl_xor_sync(0xffffffffu, v.key, o), __shfl_xor_sync(0xffffffffu, v.idx, o)};
    v = better(v, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    keys[warp] = v.key;
    idxs[warp] = v.idx;
  }
  __syncthreads();
  if (warp == 0) {
    KeyIdx w = lane < kThreads / 32 ? KeyIdx{keys[lane], idxs[lane]} : KeyIdx{0.0, -1};
    for (int o = 16; o > 0; o >>= 1) {
      KeyIdx other{__shfl_xor_sync(0xffffffffu, w.key, o), __shfl_xor_sync(0xffffffffu, w.idx, o)};
      w = better(w, other);
    }
    if (lane == 0) result = w;
  }
  __syncthreads();
  const KeyIdx out = result;
  __syncthreads();
  return out;
}

}  // namespace cuda
}  // namespace pysedd
