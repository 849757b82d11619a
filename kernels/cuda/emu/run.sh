#!/usr/bin/env bash
# Build and run the CPU-emulator checks of the CUDA kernels (no GPU needed; g++ >= 9).
#   kernels/cuda/emu/run.sh            all checks
#   kernels/cuda/emu/run.sh norms      one group of test_ops (elementwise reduce losses gaussian
#                                      adam norms resize attention), of test_layout (slices strided),
#                                      or "conv" (conv, bf16 conv, tf32 streamed conv, gemm)
# The emulator runs each CUDA thread as a fiber and emulates mma.sync from the PTX fragment
# tables, so tiling, barriers, shuffles and fragment layouts are exercised; timing, inter-block
# races and cp.async asynchrony are not (see emu.h).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/medvae-emu"
mkdir -p "$out"
flags=(-std=c++17 -O1 -DMEDVAE_EMU -Wno-unknown-pragmas)
what="${1:-all}"
status=0
if [ "$what" = all ] || [ "$what" = conv ]; then
  g++ "${flags[@]}" -o "$out/test_conv" "$here/test_conv.cpp"
  "$out/test_conv" | grep -v '^ok' || status=1
  g++ "${flags[@]}" -o "$out/test_conv_bf16" "$here/test_conv_bf16.cpp"
  "$out/test_conv_bf16" | grep -v '^ok' || status=1
  g++ "${flags[@]}" -o "$out/test_conv_tf32" "$here/test_conv_tf32.cpp"
  "$out/test_conv_tf32" | grep -v '^ok' || status=1
fi
if [ "$what" != conv ]; then
  for t in test_ops test_layout; do
    g++ "${flags[@]}" -o "$out/$t" "$here/$t.cpp"
    # A group name selects checks in whichever binary has them (the other runs none).
    if [ "$what" = all ]; then "$out/$t" | grep -v '^ok' || status=1
    else "$out/$t" "$what" || status=1; fi
  done
fi
exit $status
