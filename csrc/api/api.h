// Torch-facing entry points: input checks, allocation, params filling. Each takes the backend's
// launcher so the CPU (api/ops_api.cpp) and CUDA (cuda/*.cu) registrations share one implementation.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
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

}  // namespace pysedd
