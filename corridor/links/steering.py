"""Keep a delay line's CPU free of the receiving hosts' work: pin the line, steer its peers' receive processing away.

Stage: emulation (root). When the delay line sends a frame into a veth, the
kernel runs the receiving side's whole stack (the router's forwarding, the
bridge, the host's TCP and its wake-up of the reader) in the softirq that runs
inside the line's own ``send()``. ``perf`` on the compiled line at 5 Gbit/s
found 16 % of its samples there, and single sends that took 2-3 ms, during
which every frame due waited: that is departure lateness the link never asked
for.

Receive packet steering (RPS) moves that work. Each line is pinned to one CPU
(``--cpu`` of both engines); the rx queues of the two interfaces it sends into
(its peers, in other namespaces) get an RPS mask of every other CPU this
process may use. A send then only queues the frame on another CPU's backlog.
Lines take the CPUs in turn.

Steering is used only while the lines a machine carries are no more than its
usable CPUs. Measured on 2 CPUs (``corridor bench link`` / ``bench links``,
compiled line, docs/links.md): one link at 5 Gbit/s, lateness p99 1.1-2.1 ms
steered against 2.1-3.0 ms not; two links at 1 Gbit/s held (p99 330 us) steered
and did not (2,320 us) unsteered; but four links carried 59-61 % steered
against 64-86 % unsteered, at 0.25 against 0.18-0.24 CPU-s per Gbit/s: with
more lines than CPUs, every CPU runs lines, so the moved work lands on another
line's CPU and the cross-CPU hand-off is pure cost. On a single CPU there is
nowhere to steer to. The caller that builds the lines says how many there will
be (:func:`expecting`): a network's wires carry its WAN link count, the
benchmarks their testbed count; a line started outside it counts as the only
one.

``CORRIDOR_LINK_STEERING=off`` turns it off (for comparisons: ``corridor bench
link`` prints which is in force); ``exclusive`` also keeps the traffic's processes
off the lines' CPUs (:func:`traffic_cpus`), which kept a 10 Gbit/s line on time
(p99 270-480 us) but left the flow one CPU and 52-53 % of the rate. The peers' masks are written by this module
run as a program in the peer's network namespace, because a namespace's
``/sys/class/net`` shows only the devices of the namespace that mounted it: the
program enters the namespace, takes a private mount namespace, mounts sysfs
there and writes the masks; nothing outside it sees the mount.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import itertools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from corridor.errors import EmulationError

#: The environment switch: on (default) or off.
STEERING_ENV = "CORRIDOR_LINK_STEERING"

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000
_INTF_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
_MASK_RE = re.compile(r"^[0-9a-f]{1,8}(,[0-9a-f]{8})*$")

#: Lines started by this process, for taking CPUs in turn.
_line_counter = itertools.count()
#: How many lines the current build will run on this machine (:func:`expecting`).
_expected_lines = 1


#: The switch's values.
MODES = ("on", "off", "exclusive")


def mode(environ: dict[str, str] | None = None) -> str:
    """``CORRIDOR_LINK_STEERING``: on (default), off, or exclusive (EmulationError for anything else).

    exclusive is on, and the traffic's own processes (agents, iperf3) are kept off the lines' CPUs
    as well, where a CPU is left for them: :func:`traffic_cpus`.
    """
    value = (environ if environ is not None else os.environ).get(STEERING_ENV, "on").strip().lower()
    if value in ("on", "1", "yes", ""):
        return "on"
    if value in ("off", "0", "no"):
        return "off"
    if value == "exclusive":
        return "exclusive"
    raise EmulationError(f"{STEERING_ENV}={value!r}: use on, off or exclusive")


def enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether lines are steered at all (on or exclusive)."""
    return mode(environ) != "off"


def traffic_cpus(line_cpus: Iterable[int]) -> list[int] | None:
    """In exclusive mode, the usable CPUs the traffic's processes keep to (none of ``line_cpus``); else None.

    None too when the lines take every CPU: then the traffic runs everywhere, as with on.
    """
    lines = set(line_cpus)
    if mode() != "exclusive" or not lines:
        return None
    rest = sorted(set(os.sched_getaffinity(0)) - lines)
    return rest or None


def pinned_argv(cpus: Sequence[int] | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run on ``cpus`` only (taskset execs it: same pid), or unchanged for None."""
    if not cpus:
        return list(argv)
    return ["taskset", "-c", ",".join(str(cpu) for cpu in cpus), *argv]


def rps_mask(cpus: Iterable[int]) -> str:
    """The rps_cpus bitmap for ``cpus``: hex, in comma-separated 32-bit words as the kernel parses it."""
    bits = 0
    for cpu in cpus:
        if cpu < 0:
            raise ValueError(f"CPU numbers are not negative, got {cpu}")
        bits |= 1 << cpu
    if bits == 0:
        return "0"
    words = []
    while bits:
        words.append(bits & 0xFFFFFFFF)
        bits >>= 32
    words.reverse()
    return ",".join([f"{words[0]:x}", *(f"{word:08x}" for word in words[1:])])


@dataclass(frozen=True)
class LinePlacement:
    """Where one delay line runs (``cpu``) and the RPS mask its peers' rx queues get (``peer_mask``)."""

    cpu: int
    peer_mask: str

    def describe(self) -> str:
        return f"line on CPU {self.cpu}, receivers' stacks on CPU mask {self.peer_mask}"


def why_not(lines: int, cpus: Sequence[int]) -> str | None:
    """Why ``lines`` delay lines on ``cpus`` are not steered; None when they are."""
    count = len(set(cpus))
    if count < 2:
        return "one CPU: nowhere to steer to"
    if lines > count:
        return f"{lines} lines on {count} CPUs: with more lines than CPUs steering costs more than it saves"
    return None


def placement_for(index: int, cpus: Sequence[int], lines: int = 1) -> LinePlacement | None:
    """The ``index``-th of ``lines`` lines' placement over the usable ``cpus``; None where it is not steered."""
    ordered = sorted(set(cpus))
    if why_not(lines, ordered):
        return None
    cpu = ordered[index % len(ordered)]
    return LinePlacement(cpu=cpu, peer_mask=rps_mask(c for c in ordered if c != cpu))


def next_placement() -> LinePlacement | None:
    """The next line's placement in this process, or None (steering off, one CPU, more lines than CPUs)."""
    if not enabled():
        return None
    return placement_for(next(_line_counter), sorted(os.sched_getaffinity(0)), _expected_lines)


def note() -> str:
    """Why the lines now being built are not steered, for reports ("" when they are)."""
    if not enabled():
        return f"off ({STEERING_ENV}=off)"
    reason = why_not(_expected_lines, sorted(os.sched_getaffinity(0)))
    return f"off ({reason})" if reason else ""


@contextmanager
def expecting(lines: int) -> Iterator[None]:
    """Within this block, lines are placed as ``lines`` lines on this machine (steered only if they fit the CPUs)."""
    global _expected_lines
    saved, _expected_lines = _expected_lines, max(1, int(lines))
    try:
        yield
    finally:
        _expected_lines = saved


def steer_argv(targets: Sequence[tuple[str, str]], mask: str) -> list[str]:
    """argv (root, any namespace) that sets ``mask`` on every rx queue of each ``(netns_path, interface)``.

    One program for all of a line's receivers: each start of Python costs about 85 ms, once per network build.
    """
    at = [word for netns_path, intf in targets for word in ("--at", netns_path, intf)]
    return [sys.executable, "-m", "corridor.links.steering", "--mask", mask, *at]


#: Exit status of the program when the kernel has no receive packet steering (no rps_cpus files).
EXIT_NO_RPS = 3


def steer_receivers(targets: Sequence[tuple[str, str]], mask: str, *, timeout_s: float = 20.0) -> str | None:
    """Set ``mask`` on each ``(netns_path, interface)``; None when done, else why not (a kernel without RPS).

    Any other failure raises EmulationError: a half-steered link would measure something else.
    """
    from corridor.emulation.api import package_env

    if not targets:
        return None
    names = ", ".join(intf for _path, intf in targets)
    try:
        done = subprocess.run(steer_argv(targets, mask), capture_output=True, text=True, timeout=timeout_s,
                              env=package_env(), check=False)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"steering the receive queues of {names} took over {timeout_s:g} s") from None
    if done.returncode == EXIT_NO_RPS:
        return done.stderr.strip() or "this kernel has no receive packet steering"
    if done.returncode != 0:
        raise EmulationError(f"cannot steer the receive queues of {names}: {done.stderr.strip() or done.returncode}; "
                             f"{STEERING_ENV}=off runs without steering")
    return None


def place_line(receivers: Sequence[tuple[str, str]] | None) -> tuple[LinePlacement | None, str]:
    """Place the next line and steer its ``receivers``: ``(placement, "")``, or ``(None, why it is not steered)``.

    The one path both the link backend and the testbed take.
    """
    if not receivers:
        return None, "off (its receivers are not on this machine)"
    placement = next_placement()
    if placement is None:
        return None, note()
    why_not = steer_receivers(receivers, placement.peer_mask)
    if why_not:
        return None, f"off ({why_not})"
    return placement, ""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def private_mounts() -> None:
    """Give this process a mount namespace of its own, so the sysfs mounts of :func:`enter_sysfs_of` stay in it."""
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "taking a private mount namespace")
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "making the mounts private")


def enter_sysfs_of(netns_path: str, sys_root: str) -> None:
    """Join ``netns_path`` and mount its sysfs on the empty directory ``sys_root`` (after :func:`private_mounts`).

    A directory of its own, not /sys: the kernel refuses a sysfs mounted over the same namespace's sysfs.
    """
    libc = _libc()
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(f"cannot open the network namespace {netns_path}: {exc.strerror}") from None
    try:
        _check(libc.setns(fd, _CLONE_NEWNET), f"entering network namespace {netns_path}")
    finally:
        os.close(fd)
    _check(libc.mount(b"sysfs", os.fsencode(sys_root), b"sysfs", 0, None), "mounting sysfs for the namespace")


class NoRpsError(OSError):
    """The kernel was built without receive packet steering."""


def rps_files(interfaces: Sequence[str], sys_root: str = "/sys") -> list[tuple[str, str]]:
    """``(INTF/rx-N, path of its rps_cpus)`` for every rx queue of ``interfaces`` (OSError naming what is missing)."""
    files = []
    for intf in interfaces:
        queues = os.path.join(sys_root, "class", "net", intf, "queues")
        try:
            names = sorted(name for name in os.listdir(queues) if name.startswith("rx-"))
        except FileNotFoundError:
            raise OSError(f"no interface {intf} in this namespace ({queues} is missing)") from None
        if not names:
            raise OSError(f"interface {intf} has no receive queues under {queues}")
        for name in names:
            path = os.path.join(queues, name, "rps_cpus")
            if not os.path.exists(path):
                raise NoRpsError(f"this kernel has no receive packet steering ({path} is missing; CONFIG_RPS)")
            files.append((f"{intf}/{name}", path))
    return files


def write_masks(interfaces: Sequence[str], mask: str, sys_root: str = "/sys") -> list[str]:
    """Write ``mask`` to every ``rx-*`` queue's rps_cpus of ``interfaces``; the paths written."""
    written = []
    for _queue, path in rps_files(interfaces, sys_root):
        with open(path, "w", encoding="ascii") as handle:
            handle.write(mask + "\n")
        written.append(path)
    return written


def read_masks(interfaces: Sequence[str], sys_root: str = "/sys") -> dict[str, str]:
    """The rps_cpus of every rx queue of ``interfaces``, by ``INTF/rx-N``."""
    masks = {}
    for queue, path in rps_files(interfaces, sys_root):
        with open(path, encoding="ascii") as handle:
            masks[queue] = handle.read().strip()
    return masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m corridor.links.steering",
        description="Set (or show) the receive-packet-steering CPU mask of interfaces in network namespaces (root).",
    )
    parser.add_argument("--at", nargs=2, action="append", required=True, metavar=("NETNS", "IFACE"),
                        help="an interface and its namespace's file (/proc/PID/ns/net or /run/netns/NAME); repeat it")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--mask", help="hex CPU bitmap to set, e.g. 2 or ff,00000000")
    action.add_argument("--show", action="store_true", help="print each rx queue's mask instead")
    args = parser.parse_args(argv)
    if args.mask is not None and not _MASK_RE.match(args.mask):
        parser.error(f"--mask {args.mask!r} is not a hex CPU bitmap (e.g. 2, or ff,00000000 past 32 CPUs)")
    bad = [name for _path, name in args.at if not _INTF_RE.match(name)]
    if bad:
        parser.error(f"not interface names: {', '.join(bad)}")
    by_netns: dict[str, list[str]] = {}
    for netns_path, intf in args.at:
        by_netns.setdefault(netns_path, []).append(intf)
    try:
        private_mounts()
        for netns_path, interfaces in by_netns.items():
            # the mount lives in this process's private mount namespace and goes with it; the directory does not
            with tempfile.TemporaryDirectory(prefix="corridor-sysfs-") as sys_root:
                enter_sysfs_of(netns_path, sys_root)
                try:
                    if args.show:
                        for queue, mask in read_masks(interfaces, sys_root).items():
                            print(queue, mask)
                    else:
                        write_masks(interfaces, args.mask, sys_root)
                finally:
                    _check(_libc().umount2(os.fsencode(sys_root), 0), "unmounting the namespace's sysfs")
    except NoRpsError as exc:
        print(f"corridor.links.steering: {exc}", file=sys.stderr)
        return EXIT_NO_RPS
    except OSError as exc:
        print(f"corridor.links.steering: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
