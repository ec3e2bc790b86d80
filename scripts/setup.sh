#!/usr/bin/env bash
# One idempotent setup for corridor on Debian 12 / Ubuntu 22.04+, as root.
# Used by README's commands, .ci/run and the Vagrantfile alike.
#
#   scripts/setup.sh            system packages + .venv with corridor installed
#   scripts/setup.sh --test     also the test tools (pytest, ruff, mypy, ruby for the Vagrantfile check)
#   scripts/setup.sh --netem-vm also what the netem tests need to boot a real kernel under qemu
#
# The virtual environment is made from the system Python (/usr/bin/python3) with
# --system-site-packages, because that is where Debian's Mininet module lives.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${CORRIDOR_VENV:-$here/.venv}"
want_test=0
want_vm=0
for arg in "$@"; do
    case "$arg" in
        --test) want_test=1 ;;
        --netem-vm) want_vm=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option $arg (use --test, --netem-vm)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages): sudo bash scripts/setup.sh $*" >&2
    exit 1
fi

step() { printf '\n==> %s\n' "$*"; }

packages=(mininet iperf3 iputils-ping ethtool tcpdump iproute2 net-tools bridge-utils procps
          python3 python3-venv python3-dev gcc libc6-dev libjansson-dev)
if [ "$want_test" = 1 ]; then
    packages+=(ruby openmpi-bin python3-mpi4py openssh-server)
    # Headless Chromium checks the HTML report. Debian ships it as a package; Ubuntu only as a
    # snap, which a provisioning run should not depend on (that test then skips and says so).
    distro=$(. /etc/os-release && echo "${ID:-}")
    if [ "$distro" = debian ]; then
        packages+=(chromium)
    fi
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    step "system packages already installed"
fi

if [ "$want_vm" = 1 ]; then
    step "netem VM: qemu, a Debian kernel with sch_netem"
    CORRIDOR_VENV="$venv" bash "$here/scripts/setup-netem-vm.sh"
fi

step "virtual environment $venv (system Python, with Mininet visible)"
if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
extras=""
[ "$want_test" = 1 ] && extras="test,analysis"
[ "$want_vm" = 1 ] && extras="${extras:+$extras,}netem-vm"
"$venv/bin/python" -m pip install -q -e "$here${extras:+[$extras]}"

step "the compiled delay line (corridor/links/native/delayline.c; links run it where it is built)"
"$venv/bin/python" -m corridor.links.engine build

"$venv/bin/python" -c "import mininet.net, corridor; print('corridor', corridor.__version__, 'ready in', '$venv')"
step "done: try  sudo $venv/bin/corridor doctor"
