#!/usr/bin/env bash
# Install NVIDIA's NVRTC (and the CUDA runtime headers, and optionally ptxas) from PyPI wheels
# into a plain directory, so that `medvae-fast kernels compile` can compile every CUDA kernel on
# a machine with no GPU, no driver and no CUDA toolkit (CI).
#
# usage: scripts/install-nvrtc.sh [TARGET_DIR] [--no-ptxas] [--with-nvdisasm]
#   TARGET_DIR defaults to $MEDVAE_NVRTC_DIR, else /opt/nvrtc.
#   --with-nvdisasm also installs nvdisasm (for `kernels compile --sass`; NVIDIA publishes it
#   on PyPI only for CUDA 13, whose nvdisasm reads the CUDA 12 ptxas cubins).
#   Already-installed wheels are reused (the script is idempotent and cheap to re-run).
#
# Progress goes to stderr; stdout is only the `export` lines, so CI can do:
#   eval "$(scripts/install-nvrtc.sh /opt/nvrtc)"
#
# Env: PYTHON (default python3), MEDVAE_NVRTC_VERSION (default 12.9.*: must be a CUDA 12 release
# because cudarc is built with `cuda-12090`; the PTX it emits needs a driver of that release or
# newer, while the CUBIN the runtime prefers only needs a CUDA 12 driver).
set -euo pipefail

TARGET="${MEDVAE_NVRTC_DIR:-/opt/nvrtc}"
WITH_PTXAS=1
WITH_NVDISASM=0
for arg in "$@"; do
  case "$arg" in
    --no-ptxas) WITH_PTXAS=0 ;;
    --with-nvdisasm) WITH_NVDISASM=1 ;;
    -h|--help) sed -n '2,16p' "$0" >&2; exit 0 ;;
    *) TARGET="$arg" ;;
  esac
done
PY="${PYTHON:-python3}"
VER="${MEDVAE_NVRTC_VERSION:-12.9.*}"

log() { echo "install-nvrtc: $*" >&2; }

NVRTC_LIB="$TARGET/nvidia/cuda_nvrtc/lib"
RT_INC="$TARGET/nvidia/cuda_runtime/include"
PTXAS="$TARGET/nvidia/cuda_nvcc/bin/ptxas"
NVDISASM="$TARGET/nvdisasm/nvidia/cu13/bin/nvdisasm"

# pip --target replaces the whole `nvidia/` package folder of an earlier install, so the
# CUDA 12 wheels always go in together, and nvdisasm (a CUDA 13 wheel) into a folder of its own.
pkgs=("nvidia-cuda-nvrtc-cu12==$VER" "nvidia-cuda-runtime-cu12==$VER")
[ "$WITH_PTXAS" = 1 ] && pkgs+=("nvidia-cuda-nvcc-cu12==$VER")
missing=0
[ -e "$NVRTC_LIB/libnvrtc.so.12" ] || missing=1
[ -e "$RT_INC/cuda_runtime.h" ] || missing=1
if [ "$WITH_PTXAS" = 1 ] && [ ! -x "$PTXAS" ]; then missing=1; fi

pip_install() {  # TARGET PACKAGE...
  local dir="$1"
  shift
  log "installing $* into $dir"
  mkdir -p "$dir"
  # --no-deps: these wheels are self-contained; --upgrade so that a partial earlier install is completed.
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$dir" "$@" >&2
}
if [ "$missing" = 1 ]; then
  pip_install "$TARGET" "${pkgs[@]}"
else
  log "already installed in $TARGET"
fi
if [ "$WITH_NVDISASM" = 1 ] && [ ! -e "$NVDISASM" ]; then
  pip_install "$TARGET/nvdisasm" "nvidia-cuda-nvdisasm==${MEDVAE_NVDISASM_VERSION:-13.*}" ||
    log "warning: nvdisasm not installed (kernels compile --sass will be unavailable)"
fi

if [ ! -e "$NVRTC_LIB/libnvrtc.so.12" ]; then
  log "error: $NVRTC_LIB/libnvrtc.so.12 missing after install"
  exit 1
fi
# cudarc's dynamic loader tries libnvrtc.so, libnvrtc.so.12, ...: the wheel ships
# libnvrtc.so.12 (found through LD_LIBRARY_PATH); an unversioned link also serves dlopen callers
# that only try the bare name.
[ -e "$NVRTC_LIB/libnvrtc.so" ] || ln -s libnvrtc.so.12 "$NVRTC_LIB/libnvrtc.so"

echo "export LD_LIBRARY_PATH=\"$NVRTC_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
echo "export MEDVAE_CUDA_INCLUDE=\"$RT_INC\""
if [ -x "$PTXAS" ]; then
  echo "export MEDVAE_PTXAS=\"$PTXAS\""
fi
if [ -e "$NVDISASM" ]; then
  chmod +x "$NVDISASM"
  echo "export MEDVAE_NVDISASM=\"$NVDISASM\""
fi
log "done"
