// Plain parameter structs handed from the torch-facing API (csrc/api) to the kernels: raw pointers,
// sizes and scalars only, so kernels never see torch types.
#pragma once
#include <cstdint>

namespace pysedd {

enum DType : int { kFloat32 = 0, kBFloat16 = 1 };

// Score entropy over rows of log-scores [rows, V] (row r belongs to batch r / L).
// loss (optional):  loss[r]  = row_scale[r]? * l_r                      (fp32)
// grad (optional):  grad[r,:] = row_scale[r] * d l_r / d s[r,:]          (dtype of log_score)
struct ScoreEntropyParams {
  const void* log_score = nullptr;
  const int64_t* xt = nullptr;
  const int64_t* x0 = nullptr;
  const double* sigma = nullptr;      // [B]
  const float* row_scale = nullptr;   // [rows]; required when grad is set, optional for the loss
  float* loss = nullptr;              // [rows]
  void* grad = nullptr;               // [rows, V]
  int64_t rows = 0, L = 1, V = 0, n_real = 0;
  int64_t graph = 0;
  int dtype = kFloat32;
  int device = 0;
};

// Fused absorb loss on raw logits [rows, V] (V = n_real + 1, column n_real is MASK and ignored):
// loss[r] = w_r * ((1/N) sum_{y<N} e^{raw_y} - raw_{x0} + log N - 1), logits overwritten in place by
// d loss[r] / d raw = w_r * (e^{raw_y}/N - [y = x0]) (0 in the MASK column).
struct AbsorbRawParams {
  void* logits = nullptr;
  const int64_t* x0 = nullptr;
  const float* row_weight = nullptr;
  float* loss = nullptr;
  int64_t rows = 0, V = 0, n_real = 0;
  int dtype = kFloat32;
  int device = 0;
};

// One reverse-diffusion step: per row, draw the next token from the predictor's weights.
// coef[b]: dt*sigma'(t) (euler), sigma(t)-sigma(t-dt) (analytic), sigma(eps) (denoise).
struct ReverseStepParams {
  const void* log_score = nullptr;
  const int64_t* x = nullptr;
  const double* coef = nullptr;       // [B]
  const bool* frozen = nullptr;       // [rows] or nullptr
  int64_t* out = nullptr;             // [rows]
  int64_t rows = 0, L = 1, V = 0, n_real = 0;
  int64_t graph = 0, predictor = 0;
  uint64_t seed = 0, offset = 0;
  int dtype = kFloat32;
  int device = 0;
};

void score_entropy_cpu(const ScoreEntropyParams& p);
void absorb_raw_cpu(const AbsorbRawParams& p);
void reverse_step_cpu(const ReverseStepParams& p);
void score_entropy_cuda(const ScoreEntropyParams& p);
void absorb_raw_cuda(const AbsorbRawParams& p);
void reverse_step_cuda(const ReverseStepParams& p);

}  // namespace pysedd
