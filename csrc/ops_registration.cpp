// The pysedd._C module: importing it runs the static registrations below (and the per-backend
// TORCH_LIBRARY_IMPL blocks beside each kernel in csrc/cpu and csrc/cuda). Python calls torch.ops.pysedd.<op>.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// A minimal module object; no pybind11 bindings are needed. Works with the limited API (abi3).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

// All schemas, nothing else. graph: 0 = absorb, 1 = uniform.  predictor: 0 = euler, 1 = analytic, 2 = denoise.
TORCH_LIBRARY(pysedd, m) {
  // per-position score entropy l[B, L] (fp32) of log-scores [B, L, V]
  m.def("score_entropy_fwd(Tensor log_score, Tensor xt, Tensor x0, Tensor sigma, int graph) -> Tensor");
  // grad[B, L] -> d(sum grad*l)/d log_score, dtype of log_score
  m.def("score_entropy_bwd(Tensor grad, Tensor log_score, Tensor xt, Tensor x0, Tensor sigma, int graph) -> Tensor");
  // sum_{b,l} row_weight*l as a 0-d fp32 tensor, plus its gradient w.r.t. log_score, formed in the same pass
  m.def("score_entropy_weighted(Tensor log_score, Tensor xt, Tensor x0, Tensor sigma, Tensor row_weight, int graph)"
        " -> (Tensor, Tensor)");
  // fused-output-layer helper: per-row weighted absorb loss on raw logits; logits overwritten by their gradient
  m.def("absorb_raw_loss_grad_(Tensor(a!) logits, Tensor x0, Tensor row_weight, int n_real) -> Tensor");
  // one reverse-diffusion step: next tokens [B, L] drawn from the predictor's weights
  m.def("reverse_step(Tensor log_score, Tensor x, Tensor coef, Tensor? frozen, int graph, int predictor, int seed,"
        " int offset) -> Tensor");
  // pysedd::fused_absorb_loss (output layer + absorb loss, chunked) is not declared here: it has no C++ body, it
  // is a Python composite of matmuls and absorb_raw_loss_grad_, so torch.library.custom_op in
  // pysedd/ops/fused.py declares its schema from the Python signature, next to its fake and autograd.
}
