#!/usr/bin/env bash
# Compile-only check of every csrc/cuda/*.cu with nvcc against the installed (possibly CPU-only) torch, so CUDA
# code cannot rot on machines without a GPU (docs/kernels.md#nvcc-check). No link step: a CPU wheel has no libc10_cuda.
# Exits 0 with a message when nvcc is absent. Env: PYTHON (default python3), NVCC_ARCH (default 90).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "nvcc_check: nvcc not found, skipping the CUDA compile check"
  exit 0
fi
PY="${PYTHON:-python3}"
ARCH="${NVCC_ARCH:-90}"
I=$("$PY" -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
status=0
for cu in csrc/cuda/*.cu; do
  start=$(date +%s%N)
  if "$NVCC" -c "$cu" -o "$OUT/$(basename "$cu").o" -std=c++20 -O3 -Xcompiler -fPIC \
      -gencode=arch=compute_${ARCH},code=sm_${ARCH} $I -I"$PYINC" -Icsrc -Icsrc/include \
      --expt-relaxed-constexpr -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
      -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_API_INCLUDE_EXTENSION_H \
      -DTORCH_EXTENSION_NAME=_C -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE; then
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf 'nvcc_check: %-36s ok   %d.%01d s\n' "$cu" $((ms / 1000)) $(((ms % 1000) / 100))
  else
    printf 'nvcc_check: %-36s FAILED\n' "$cu"
    status=1
  fi
done
exit $status
