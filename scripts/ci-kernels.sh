#!/usr/bin/env bash
# CI step: compile every CUDA kernel through NVRTC (from NVIDIA's PyPI wheels; no GPU, driver
# or toolkit needed) and report ptxas resources. A kernel that does not compile fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
# nvdisasm is optional: without it only the SASS report below is skipped.
eval "$(bash scripts/install-nvrtc.sh "${MEDVAE_NVRTC_DIR:-/opt/nvrtc}" --with-nvdisasm)"
cargo build --release -p medvae-fast
# With nvdisasm, each tensor-core kernel's line is followed by its main-loop instruction mix
# (a report, not a gate: the count depends on the ptxas release), so issue-bound loops show
# before any card runs them.
sass=()
[ -n "${MEDVAE_NVDISASM:-}" ] && sass=(--sass)
./target/release/medvae-fast kernels compile --arch sm_80 --arch sm_90 "${sass[@]}"
