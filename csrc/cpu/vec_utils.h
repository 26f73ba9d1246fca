// Row-streaming helpers over fp32/bf16 data with fp32 math: full vectors through at::vec::Vectorized<float>
// (Sleef exp/expm1 under AVX2), the tail element by element.
#pragma once
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <cstdint>
#include <type_traits>

namespace pysedd {
namespace cpu {

using fVec = at::vec::Vectorized<float>;

// Calls fv(fVec) for each full vector of in[0, n) and fs(float) for the tail.
template <typename T, typename FV, typename FS>
inline void for_each_float(const T* in, int64_t n, FV&& fv, FS&& fs) {
  constexpr int64_t W = fVec::size();
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; i + W <= n; i += W) fv(fVec::loadu(in + i));
  } else {
    for (; i + 2 * W <= n; i += 2 * W) {
      auto [a, b] = at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(in + i));
      fv(a);
      fv(b);
    }
  }
  for (; i < n; ++i) fs(static_cast<float>(in[i]));
}

// out[i] = f(in[i]) with fv: fVec -> fVec for full vectors and fs: float -> float for the tail.
template <typename T, typename FV, typename FS>
inline void map_float(const T* in, T* out, int64_t n, FV&& fv, FS&& fs) {
  constexpr int64_t W = fVec::size();
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; i + W <= n; i += W) fv(fVec::loadu(in + i)).store(out + i);
  } else {
    for (; i + 2 * W <= n; i += 2 * W) {
      auto [a, b] = at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(in + i));
      at::vec::convert_from_float<T>(fv(a), fv(b)).store(out + i);
    }
  }
  for (; i < n; ++i) out[i] = static_cast<T>(fs(static_cast<float>(in[i])));
}

inline float hsum(const fVec& v) {
  return at::vec::vec_reduce_all<float>([](fVec& a, fVec& b) { return a + b; }, v);
}

// Visits [0, n) minus the (up to two) excluded indices as contiguous segments: f(begin, end).
template <typename F>
inline void for_segments_excluding(int64_t n, int64_t ex1, int64_t ex2, F&& f) {
  int64_t a = ex1, b = ex2;
  if (a > b) std::swap(a, b);
  int64_t start = 0;
  for (int64_t cut : {a, b}) {
    if (cut < start || cut >= n) continue;
    if (cut > start) f(start, cut);
    start = cut + 1;
  }
  if (start < n) f(start, n);
}

}  // namespace cpu
}  // namespace pysedd
