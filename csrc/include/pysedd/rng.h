// Counter-based randomness: (seed, subsequence = row, offset) -> a reproducible stream of fp64 uniforms.
// The op's `offset` occupies the upper 32 bits of Philox's 64-bit counter, so streams of different
// (offset, row) never overlap for rows shorter than 2^33 draws.
#pragma once
#include <ATen/core/PhiloxRNGEngine.h>
#include "pysedd/math.h"

namespace pysedd {

struct RowRng {
  at::Philox4_32 engine;
  // `block` skips that many 128-bit Philox outputs (two fp64 uniforms each) into the row's stream.
  C10_HOST_DEVICE RowRng(uint64_t seed, uint64_t row, uint64_t offset, uint64_t block = 0)
      : engine(seed, row, (offset << 32) + block) {}
  C10_HOST_DEVICE inline double uniform() {
    const uint32_t a = engine();
    const uint32_t b = engine();
    return uniform53(a, b);
  }
  // Exp(1) variate with the -log taken in fp64 (tail reaches ~36.7 instead of fp32's 16.6).
  C10_HOST_DEVICE inline double exponential() { return -::log(uniform()); }
};

}  // namespace pysedd
