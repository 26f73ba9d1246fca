// Input checks, allocation and params filling for every op (the backends register them from their own files).
#include "api/api.h"

#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

namespace pysedd {
namespace {

int dtype_code(const at::Tensor& t, const char* name) {
  if (t.scalar_type() == at::kFloat) return kFloat32;
  if (t.scalar_type() == at::kBFloat16) return kBFloat16;
  TORCH_CHECK(false, "pysedd: ", name, " must be float32 or bfloat16, got ", t.scalar_type());
}

void check_device(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "pysedd: ", name, " is on ", t.device(), " but log_score is on ",
              ref.device());
}

// log_score [B, L, V]; token tensors [B, L] int64; sigma-like [B] (or [B, 1]) -> float64 [B].
struct RowLayout {
  int64_t B, L, V;
};

RowLayout check_scores(const at::Tensor& log_score, const at::Tensor& x, const char* xname) {
  TORCH_CHECK(log_score.dim() == 3, "pysedd: log_score must have shape [B, L, V], got ", log_score.sizes());
  const int64_t B = log_score.size(0), L = log_score.size(1), V = log_score.size(2);
  TORCH_CHECK(V >= 2, "pysedd: vocabulary dimension must be >= 2, got ", V);
  check_device(log_score, x, xname);
  TORCH_CHECK(x.scalar_type() == at::kLong, "pysedd: ", xname, " must be int64, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 2 && x.size(0) == B && x.size(1) == L, "pysedd: ", xname, " must have shape [", B, ", ",
              L, "] to match log_score ", log_score.sizes(), ", got ", x.sizes());
  return {B, L, V};
}

// Every id in [0, hi): checked here, before any kernel runs, so a bad id is the same catchable error on every
// backend (inside a CUDA kernel it could only be a device assert). One [B, L] reduction, no [B, L, V] pass.
void check_ids(const at::Tensor& ids, int64_t hi, const char* name, const char* what) {
  if (ids.numel() == 0) return;
  const auto [lo_t, hi_t] = at::aminmax(ids);
  const int64_t lo = lo_t.item<int64_t>(), top = hi_t.item<int64_t>();
  TORCH_CHECK(lo >= 0 && top < hi, "pysedd: ", name, " holds ids in [", lo, ", ", top, "], outside ", what, " [0, ",
              hi, ")");
}

at::Tensor per_batch_f64(const at::Tensor& log_score, const at::Tensor& t, int64_t B, const char* name) {
  check_device(log_score, t, name);
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "pysedd: ", name, " must be floating point, got ",
              t.scalar_type());
  TORCH_CHECK(t.numel() == B && (t.dim() == 1 || (t.dim() == 2 && t.size(1) == 1)), "pysedd: ", name,
              " must have shape [B] or [B, 1] with B = ", B, ", got ", t.sizes());
  return t.reshape({B}).to(at::kDouble).contiguous();
}

int64_t n_real_of(int64_t graph, int64_t V) {
  TORCH_CHECK(graph == kAbsorb || graph == kUniform, "pysedd: graph must be 0 (absorb) or 1 (uniform), got ", graph);
  return graph == kAbsorb ? V - 1 : V;
}

void check_loss_ids(const at::Tensor& xt, const at::Tensor& x0, int64_t graph, int64_t V) {
  check_ids(xt, V, "xt", "the vocabulary");
  check_ids(x0, n_real_of(graph, V), "x0", "the real tokens");
}

ScoreEntropyParams se_params(const at::Tensor& ls, const at::Tensor& xt, const at::Tensor& x0,
                             const at::Tensor& sigma64, int64_t graph, const RowLayout& s) {
  ScoreEntropyParams p;
  p.log_score = ls.data_ptr();
  p.xt = xt.data_ptr<int64_t>();
  p.x0 = x0.data_ptr<int64_t>();
  p.sigma = sigma64.data_ptr<double>();
  p.rows = s.B * s.L;
  p.L = s.L;
  p.V = s.V;
  p.n_real = n_real_of(graph, s.V);
  p.graph = graph;
  p.dtype = dtype_code(ls, "log_score");
  p.device = ls.device().is_cuda() ? ls.device().index() : 0;
  return p;
}

}  // namespace

at::Tensor score_entropy_fwd(const at::Tensor& log_score, const at::Tensor& xt, const at::Tensor& x0,
                             const at::Tensor& sigma, int64_t graph, ScoreEntropyLauncher launch) {
  const RowLayout s = check_scores(log_score, xt, "xt");
  check_scores(log_score, x0, "x0");
  check_loss_ids(xt, x0, graph, s.V);
  const at::Tensor ls = log_score.contiguous(), xtc = xt.contiguous(), x0c = x0.contiguous();
  const at::Tensor sig = per_batch_f64(log_score, sigma, s.B, "sigma");
  at::Tensor loss = at::empty({s.B, s.L}, log_score.options().dtype(at::kFloat));
  ScoreEntropyParams p = se_params(ls, xtc, x0c, sig, graph, s);
  p.loss = loss.data_ptr<float>();
  if (p.rows > 0) launch(p);
  return loss;
}

at::Tensor score_entropy_bwd(const at::Tensor& grad, const at::Tensor& log_score, const at::Tensor& xt,
                             const at::Tensor& x0, const at::Tensor& sigma, int64_t graph,
                             ScoreEntropyLauncher launch) {
  const RowLayout s = check_scores(log_score, xt, "xt");
  check_scores(log_score, x0, "x0");
  check_loss_ids(xt, x0, graph, s.V);
  check_device(log_score, grad, "grad");
  TORCH_CHECK(grad.sizes() == xt.sizes(), "pysedd: grad must have shape ", xt.sizes(), ", got ", grad.sizes());
  const at::Tensor ls = log_score.contiguous(), xtc = xt.contiguous(), x0c = x0.contiguous();
  const at::Tensor g = grad.to(at::kFloat).contiguous();
  const at::Tensor sig = per_batch_f64(log_score, sigma, s.B, "sigma");
  at::Tensor out = at::empty_like(ls, at::MemoryFormat::Contiguous);
  ScoreEntropyParams p = se_params(ls, xtc, x0c, sig, graph, s);
  p.row_scale = g.data_ptr<float>();
  p.grad = out.data_ptr();
  if (p.rows > 0) launch(p);
  return out;
}

std::tuple<at::Tensor, at::Tensor> score_entropy_weighted(const at::Tensor& log_score, const at::Tensor& xt,
                                                          const at::Tensor& x0, const at::Tensor& sigma,
                                                          const at::Tensor& row_weight, int64_t graph,
                                                          ScoreEntropyLauncher launch) {
  const RowLayout s = check_scores(log_score, xt, "xt");
  check_scores(log_score, x0, "x0");
  check_loss_ids(xt, x0, graph, s.V);
  check_device(log_score, row_weight, "row_weight");
  TORCH_CHECK(row_weight.sizes() == xt.sizes(), "pysedd: row_weight must have shape ", xt.sizes(), ", got ",
              row_weight.sizes());
  const at::Tensor ls = log_score.contiguous(), xtc = xt.contiguous(), x0c = x0.contiguous();
  const at::Tensor w = row_weight.to(at::kFloat).contiguous();
  const at::Tensor sig = per_batch_f64(log_score, sigma, s.B, "sigma");
  at::Tensor rows = at::empty({s.B, s.L}, log_score.options().dtype(at::kFloat));
  at::Tensor grad = at::empty_like(ls, at::MemoryFormat::Contiguous);
  ScoreEntropyParams p = se_params(ls, xtc, x0c, sig, graph, s);
  p.row_scale = w.data_ptr<float>();
  p.loss = rows.data_ptr<float>();
  p.grad = grad.data_ptr();
  if (p.rows > 0) launch(p);
  return {rows.sum(), grad};
}

at::Tensor absorb_raw_loss_grad_(at::Tensor& logits, const at::Tensor& x0, const at::Tensor& row_weight,
                                 int64_t n_real, AbsorbRawLauncher launch) {
  TORCH_CHECK(logits.dim() == 2, "pysedd: logits must have shape [n, V], got ", logits.sizes());
  TORCH_CHECK(logits.stride(1) == 1 && logits.stride(0) == logits.size(1),
              "pysedd: logits must be contiguous (it is overwritten in place by its gradient)");
  const int64_t n = logits.size(0), V = logits.size(1);
  TORCH_CHECK(n_real >= 1 && n_real <= V, "pysedd: n_real must be in [1, V = ", V, "], got ", n_real);
  check_device(logits, x0, "x0");
  check_device(logits, row_weight, "row_weight");
  TORCH_CHECK(x0.scalar_type() == at::kLong && x0.dim() == 1 && x0.size(0) == n,
              "pysedd: x0 must be int64 of shape [", n, "], got ", x0.scalar_type(), " ", x0.sizes());
  TORCH_CHECK(row_weight.dim() == 1 && row_weight.size(0) == n, "pysedd: row_weight must have shape [", n,
              "], got ", row_weight.sizes());
  check_ids(x0, n_real, "x0", "the real tokens");
  const at::Tensor x0c = x0.contiguous();
  const at::Tensor w = row_weight.to(at::kFloat).contiguous();
  at::Tensor loss = at::empty({n}, logits.options().dtype(at::kFloat));
  AbsorbRawParams p;
  p.logits = logits.data_ptr();
  p.x0 = x0c.data_ptr<int64_t>();
  p.row_weight = w.data_ptr<float>();
  p.loss = loss.data_ptr<float>();
  p.rows = n;
  p.V = V;
  p.n_real = n_real;
  p.dtype = dtype_code(logits, "logits");
  p.device = logits.device().is_cuda() ? logits.device().index() : 0;
  if (n > 0) launch(p);
  return loss;
}

at::Tensor reverse_step(const at::Tensor& log_score, const at::Tensor& x, const at::Tensor& coef,
                        const std::optional<at::Tensor>& frozen, int64_t graph, int64_t predictor, int64_t seed,
                        int64_t offset, ReverseStepLauncher launch) {
  const RowLayout s = check_scores(log_score, x, "x");
  check_ids(x, s.V, "x", "the vocabulary");
  TORCH_CHECK(predictor == kEuler || predictor == kAnalytic || predictor == kDenoise,
              "pysedd: predictor must be 0 (euler), 1 (analytic) or 2 (denoise), got ", predictor);
  TORCH_CHECK(offset >= 0 && offset < (int64_t(1) << 32), "pysedd: offset must be in [0, 2^32), got ", offset);
  const at::Tensor ls = log_score.contiguous(), xc = x.contiguous();
  const at::Tensor c = per_batch_f64(log_score, coef, s.B, "coef");
  at::Tensor fz;
  if (frozen.has_value()) {
    check_device(log_score, *frozen, "frozen");
    TORCH_CHECK(frozen->scalar_type() == at::kBool && frozen->sizes() == x.sizes(),
                "pysedd: frozen must be a bool tensor of shape ", x.sizes(), ", got ", frozen->scalar_type(), " ",
                frozen->sizes());
    fz = frozen->contiguous();
  }
  at::Tensor out = at::empty({s.B, s.L}, x.options());
  ReverseStepParams p;
  p.log_score = ls.data_ptr();
  p.x = xc.data_ptr<int64_t>();
  p.coef = c.data_ptr<double>();
  p.frozen = fz.defined() ? fz.data_ptr<bool>() : nullptr;
  p.out = out.data_ptr<int64_t>();
  p.rows = s.B * s.L;
  p.L = s.L;
  p.V = s.V;
  p.n_real = n_real_of(graph, s.V);
  p.graph = graph;
  p.predictor = predictor;
  p.seed = static_cast<uint64_t>(seed);
  p.offset = static_cast<uint64_t>(offset);
  p.dtype = dtype_code(log_score, "log_score");
  p.device = log_score.device().is_cuda() ? log_score.device().index() : 0;
  if (p.rows > 0) launch(p);
  return out;
}

}  // namespace pysedd
