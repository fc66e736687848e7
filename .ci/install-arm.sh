#!/bin/sh
# Install the toolchain that tests/test_export_c.py needs on a fresh Debian 12 machine.
#
#   gcc                       host build of the generated C (bit-exactness over MNIST)
#   gcc-arm-none-eabi         cross compiler for Cortex-M0 (ARMv6-M), binutils (nm, objdump, size)
#   libnewlib-arm-none-eabi   C library + rdimon semihosting specs for the qemu test program
#   qemu-system-arm           emulated Cortex-M board (mps2-an385) to run the firmware
#
# Run as root. Idempotent: does nothing when every tool is already present.
set -eu

need=""
command -v gcc >/dev/null 2>&1 || need="$need gcc libc6-dev"
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need="$need gcc-arm-none-eabi"
[ -f /usr/lib/arm-none-eabi/newlib/rdimon.specs ] || need="$need libnewlib-arm-none-eabi"
command -v qemu-system-arm >/dev/null 2>&1 || need="$need qemu-system-arm"

if [ -z "$need" ]; then
    echo "install-arm: all tools present"
    exit 0
fi

echo "install-arm: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $need >/dev/null
echo "install-arm: done"
