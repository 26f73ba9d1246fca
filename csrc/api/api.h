// Torch-facing entry points: input checks (shapes, devices, dtypes and token-id ranges, so that every backend
// fails the same way), allocation, params filling. Each takes the backend's launcher; the templated bindings at
// the end turn launchers into registrations, so a backend file registers its ops in one line (as in
// pytorch/extension-cpp) instead of repeating the wrapper block.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/library.h>
#include <tuple>
#include "pysedd/math.h"
#include "pysedd/params.h"

namespace pysedd {

using ScoreEntropyLauncher = void (*)(const ScoreEntropyParams&);
using AbsorbRawLauncher = void (*)(const AbsorbRawParams&);
using ReverseStepLauncher = void (*)(const ReverseStepParams&);

at::Tensor score_entropy_fwd(const at::Tensor& log_score, const at::Tensor& xt, const at::Tensor& x0,
                             const at::Tensor& sigma, int64_t graph, ScoreEntropyLauncher launch);
at::Tensor score_entropy_bwd(const at::Tensor& grad, const at::Tensor& log_score, const at::Tensor& xt,
                             const at::Tensor& x0, const at::Tensor& sigma, int64_t graph,
                             ScoreEntropyLauncher launch);
std::tuple<at::Tensor, at::Tensor> score_entropy_weighted(const at::Tensor& log_score, const at::Tensor& xt,
                                                          const at::Tensor& x0, const at::Tensor& sigma,
                                                          const at::Tensor& row_weight, int64_t graph,
                                                          ScoreEntropyLauncher launch);
at::Tensor absorb_raw_loss_grad_(at::Tensor& logits, const at::Tensor& x0, const at::Tensor& row_weight,
                                 int64_t n_real, AbsorbRawLauncher launch);
at::Tensor reverse_step(const at::Tensor& log_score, const at::Tensor& x, const at::Tensor& coef,
                        const std::optional<at::Tensor>& frozen, int64_t graph, int64_t predictor, int64_t seed,
                        int64_t offset, ReverseStepLauncher launch);

// The loss ops of one backend: score_entropy_{fwd,bwd,weighted} and absorb_raw_loss_grad_.
template <ScoreEntropyLauncher SE, AbsorbRawLauncher AR>
struct LossBinding {
  static at::Tensor fwd(const at::Tensor& ls, const at::Tensor& xt, const at::Tensor& x0, const at::Tensor& sigma,
                        int64_t graph) {
    return score_entropy_fwd(ls, xt, x0, sigma, graph, SE);
  }
  static at::Tensor bwd(const at::Tensor& grad, const at::Tensor& ls, const at::Tensor& xt, const at::Tensor& x0,
                        const at::Tensor& sigma, int64_t graph) {
    return score_entropy_bwd(grad, ls, xt, x0, sigma, graph, SE);
  }
  static std::tuple<at::Tensor, at::Tensor> weighted(const at::Tensor& ls, const at::Tensor& xt, const at::Tensor& x0,
                                                     const at::Tensor& sigma, const at::Tensor& w, int64_t graph) {
    return score_entropy_weighted(ls, xt, x0, sigma, w, graph, SE);
  }
  static at::Tensor absorb_raw(at::Tensor& logits, const at::Tensor& x0, const at::Tensor& w, int64_t n_real) {
    return absorb_raw_loss_grad_(logits, x0, w, n_real, AR);
  }
  static void register_in(torch::Library& m) {
    m.impl("score_entropy_fwd", &fwd);
    m.impl("score_entropy_bwd", &bwd);
    m.impl("score_entropy_weighted", &weighted);
    m.impl("absorb_raw_loss_grad_", &absorb_raw);
  }
};

// The reverse step of one backend.
template <ReverseStepLauncher RS>
struct StepBinding {
  static at::Tensor step(const at::Tensor& ls, const at::Tensor& x, const at::Tensor& coef,
                         const std::optional<at::Tensor>& frozen, int64_t graph, int64_t predictor, int64_t seed,
                         int64_t offset) {
    return reverse_step(ls, x, coef, frozen, graph, predictor, seed, offset, RS);
  }
  static void register_in(torch::Library& m) { m.impl("reverse_step", &step); }
};

}  // namespace pysedd
