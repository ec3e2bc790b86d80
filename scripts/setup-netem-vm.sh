#!/bin/sh
# Install what the netem VM harness (corridor/tools/vm.py) needs: qemu, cpio, kmod and a
# Debian kernel with its modules (sch_netem among them), booted by virtme-ng.
# Idempotent; run as root. virtme-ng itself comes from PyPI into the venv (scripts/setup.sh).
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-netem-vm.sh: run as root (it installs apt packages)" >&2
    exit 1
fi

VENV=${CORRIDOR_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}
need=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || need="$need qemu-system-x86"
command -v cpio >/dev/null 2>&1 || need="$need cpio"
command -v depmod >/dev/null 2>&1 || need="$need kmod"
# busybox lets virtme-ng build its initramfs without the host's own tools.
command -v busybox >/dev/null 2>&1 || need="$need busybox-static"
if ! ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1; then
    need="$need linux-image-amd64"
fi

if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # --no-install-recommends keeps firmware and other extras out; virtme-ng
    # builds its own initramfs, so the one the kernel package makes goes unused.
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $need
fi

# The module index must match the installed kernel or modprobe finds nothing.
for dir in /lib/modules/*-amd64; do
    [ -d "$dir" ] || continue
    depmod -a "$(basename "$dir")"
done

if [ -x "$VENV/bin/pip" ] && ! [ -x "$VENV/bin/vng" ]; then
    "$VENV/bin/pip" install -q virtme-ng
fi

kernel=$(ls /boot/vmlinuz-*-amd64 | sort -V | tail -n 1)
echo "netem VM ready: kernel $kernel, qemu $(command -v qemu-system-x86_64), vng $VENV/bin/vng"
