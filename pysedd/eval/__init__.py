"""The paper's evaluations, one module each: zero_shot (Table 1), harness + local_tasks (Table 2, lm-eval),
gen_ppl (Table 3), diversity (Table 4), mauve_eval (Tables 5-6); common holds what they share."""
