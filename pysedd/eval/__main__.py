"""lm-eval's own command line with pysedd's `sedd` model registered (lm-eval has no plugin flag):

    python -m pysedd.eval run --model sedd --model_args pretrained=louaaron/sedd-small,n_samples=1024,seed=0 \\
        --tasks hellaswag arc_easy --output_path out
"""
from lm_eval.__main__ import cli_evaluate

from pysedd.eval import harness  # noqa: F401  (registers the `sedd` model)

if __name__ == "__main__":
    cli_evaluate()
