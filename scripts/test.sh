#!/usr/bin/env bash
# The whole test suite with all its set-up, on a fresh Debian/Ubuntu machine:
# system packages (scripts/setup.sh), the NVRTC runtime from PyPI (so the
# CUDA kernels' compile checks run without a CUDA toolkit or GPU), then the
# workspace tests and the `cuda` feature's tests (the GPU test skips, saying
# why, where there is no GPU). Slurm (slurm-wlm, munge) is installed for the
# test that submits a run to a real single-node Slurm (xtask/tests/slurm.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    echo "test: installing slurm-wlm munge" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
if ! python3 -c 'import nvidia.cuda_nvrtc' 2>/dev/null; then
    python3 -m pip install --quiet --root-user-action=ignore nvidia-cuda-nvrtc-cu12
fi
if ! python3 -c 'import xlrd' 2>/dev/null; then
    python3 -m pip install --quiet --root-user-action=ignore xlrd
fi
nvrtc_lib="$(python3 -c 'import nvidia.cuda_nvrtc as m; print(list(m.__path__)[0])')/lib"
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo test --workspace
cargo test -p mer-flow --features cuda --test cuda_nvrtc --test cuda_gpu
