"""Stand-in servers on one machine: network namespaces running their own sshd, for tests and demos.

Stage: emulation (needs root). :func:`local_servers` makes a coordinator
namespace and N server namespaces (each server's sshd also gets a mount
namespace with a /run of its own: its own corridor state and named
namespaces; the pid namespace is shared), joins each server to the coordinator
by a veth pair made directly inside the two namespaces (``10.250.i.1/30`` on
the coordinator, ``10.250.i.2/30`` on server *i*; the root namespace gets no
interface and no address), routes the servers to each other through the
coordinator as through one switch, generates host and user keys in a work directory,
starts ``/usr/sbin/sshd -D`` in each server namespace (key login only,
``PermitRootLogin prohibit-password``), and writes a cluster file naming the
servers with a ``known_hosts`` file of their host keys. ssh to the servers is
run from the coordinator namespace (:meth:`LocalCluster.in_coordinator`).

Everything is torn down on exit, even after a failure: the sshd processes and
whatever still runs in the namespaces (each ended by pid), then the namespaces.
The namespaces are recorded as scratch namespaces of this process, so
``corridor clean`` leaves them alone while it lives and removes them if it dies.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from corridor.emulation.state import forget_scratch_netns, record_scratch_netns
from corridor.errors import ClusterError, NeedsRootError

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
#: Each server i sits on 10.250.i.0/30 (coordinator .1, server .2): a subnet only these namespaces see.
SUBNET_PREFIX = "10.250"
MAX_SERVERS = 8
#: The MTU between the servers: jumbo frames, so a VXLAN tunnel carries 1500-byte frames whole.
UNDERLAY_MTU = 9000
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LocalServer:
    name: str  # "s1"
    netns: str
    address: str  # the server's address, seen from the coordinator namespace
    sshd_pid: int


@dataclass(frozen=True)
class LocalCluster:
    """What :func:`local_servers` made; valid inside its ``with`` block."""

    coordinator_netns: str
    servers: tuple[LocalServer, ...]
    cluster_file: Path
    user_key: Path
    known_hosts: Path
    workdir: Path | None = None
    cpus: tuple[str | None, ...] = ()
    #: sshd processes started again by :meth:`power_on`, ended with the rest
    restarted: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.coordinator_netns, *(s.netns for s in self.servers))

    def server(self, name: str) -> LocalServer:
        for server in self.servers:
            if server.name == name:
                return server
        raise ValueError(f"no local server {name!r}")

    def power_off(self, name: str) -> list[int]:
        """Server ``name`` fails as a machine does: SIGKILL to its sshd, every session and node under it.

        Its namespace and address stay (a login is then refused at once rather
        than timing out). Returns the pids killed.
        """
        server = self.server(name)
        doomed = set(namespace_pids(server.netns))
        doomed |= {pid for top in list(doomed) for pid in descendants(top)}
        for pid in sorted(doomed):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sorted(doomed)

    def power_on(self, name: str) -> None:
        """Start server ``name``'s sshd again after :meth:`power_off`, with a fresh /run as after a reboot."""
        if self.workdir is None:
            raise ClusterError("this local cluster cannot start a server again (no work folder recorded)")
        server = self.server(name)
        index = self.servers.index(server)
        held = self.cpus[index] if index < len(self.cpus) else None
        self.restarted.append(_start_sshd(self.workdir, server.name, server.netns, held))

    def in_coordinator(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the coordinator namespace, where the servers' addresses are reachable."""
        return ["ip", "netns", "exec", self.coordinator_netns, *argv]


def _run(argv: Sequence[str]) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip() or done.returncode}")
    return done.stdout


def namespace_pids(netns: str) -> list[int]:
    """The pids of the processes living in named namespace ``netns`` (empty when it is gone)."""
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10, check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()] if done.returncode == 0 else []


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def netns_names() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def sshd_config(*, address: str, host_key: Path, authorized_keys: Path, pid_file: Path) -> str:
    """An sshd_config that listens on ``address`` only and lets in the one user key, nothing else."""
    return "\n".join([
        f"ListenAddress {address}",
        "Port 22",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The keys live in a test's temporary folder, whose parents (/tmp) are world-writable.
        "StrictModes no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PermitTunnel no",
        "Subsystem sftp internal-sftp",
        "",
    ])


def private_run_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` in a mount namespace of its own with an empty /run, as on a machine of its own.

    A server then keeps its own corridor state (/run/corridor) and sees its own
    named network namespaces (/run/netns), so `corridor clean` on one server
    never touches another's, nor this machine's. /run/sshd is made for sshd's
    privilege separation.
    """
    script = 'mount -t tmpfs -o mode=0755 corridor-server-run /run && mkdir -m 0755 /run/sshd && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]


def _keygen(path: Path, comment: str) -> str:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_suffix(".pub").read_text(encoding="utf-8").strip()


def _end(pid: int, grace_s: float = 3.0) -> None:
    """SIGTERM then SIGKILL one pid this module started (or that lives in its namespaces)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    """SIGTERM then SIGKILL an sshd this module started, and reap it (a zombie would look alive to a pid check)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
        return
    except subprocess.TimeoutExpired:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("sshd pid %d did not exit", proc.pid)


def _wait_listening(proc: subprocess.Popen[bytes], log_path: Path, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
        if "Server listening" in text:
            return
        if proc.poll() is not None:
            raise ClusterError(f"sshd of local server {name} exited {proc.returncode}: {text.strip()[-400:]}")
        time.sleep(0.05)
    raise ClusterError(f"sshd of local server {name} did not start listening in {START_TIMEOUT_S:.0f} s")


def _start_sshd(workdir: Path, name: str, netns: str, held: str | None) -> subprocess.Popen[bytes]:
    """Start server ``name``'s sshd in ``netns`` (on CPUs ``held``, if any) and wait until it listens."""
    config = workdir / f"{name}_sshd_config"
    log_path = workdir / f"{name}_sshd.log"
    with open(log_path, "wb") as log_file:
        # `ip netns exec`, taskset, unshare and sh each exec the next in place: this pid is sshd's own.
        pinned = ["taskset", "-c", held] if held else []
        proc = subprocess.Popen(["ip", "netns", "exec", netns, *pinned, *private_run_argv(
            [SSHD, "-D", "-e", "-f", str(config)])], stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT)
    try:
        _wait_listening(proc, log_path, name)
    except BaseException:
        _stop(proc)
        raise
    return proc


@contextmanager
def local_servers(count: int, workdir: Path, *, python: str = sys.executable,
                  cores: Sequence[int | None] | None = None,
                  cpus: Sequence[str | None] | None = None) -> Iterator[LocalCluster]:
    """Start ``count`` local servers with sshd; tear all of it down when the block ends.

    ``workdir`` (an empty folder) receives the keys, the sshd configs and logs, and
    ``cluster.yaml``; ``python`` is the interpreter the cluster file names for
    each server; ``cores`` optionally states each server's core count in it, and
    ``cpus`` holds a server to those CPUs of this machine (``taskset -c``: its sshd
    and everything started through it inherit the affinity), as a smaller
    machine would be.
    """
    if os.geteuid() != 0:
        raise NeedsRootError("local servers need root: network namespaces and sshd")
    for tool, package in ((SSHD, "openssh-server"), ("ssh-keygen", "openssh-client"), ("ssh", "openssh-client"),
                          ("ip", "iproute2")):
        if shutil.which(tool) is None:
            raise ClusterError(f"{tool} is not installed; apt install {package}")
    if not 1 <= count <= MAX_SERVERS:
        raise ValueError(f"local servers: count must be 1-{MAX_SERVERS}, got {count}")
    tag = f"corridor-lc{os.getpid()}"
    coordinator = f"{tag}-c"
    made_netns: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        user_key = workdir / "id_ed25519"
        user_pub = _keygen(user_key, "corridor-local-cluster")
        authorized = workdir / "authorized_keys"
        authorized.write_text(user_pub + "\n", encoding="utf-8")
        authorized.chmod(0o600)

        record_scratch_netns(coordinator)
        _run(["ip", "netns", "add", coordinator])
        made_netns.append(coordinator)
        _run(["ip", "-n", coordinator, "link", "set", "lo", "up"])
        _run(["ip", "netns", "exec", coordinator, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])

        servers: list[LocalServer] = []
        known: list[str] = []
        for i in range(1, count + 1):
            name = f"s{i}"
            netns = f"{tag}-{name}"
            record_scratch_netns(netns)
            _run(["ip", "netns", "add", netns])
            made_netns.append(netns)
            near, far = f"lc{os.getpid()}c{i}", f"lc{os.getpid()}s{i}"
            # Made inside the coordinator namespace with the peer inside the server's: never in the root one.
            _run(["ip", "-n", coordinator, "link", "add", near, "type", "veth", "peer", "name", far, "netns", netns])
            address = f"{SUBNET_PREFIX}.{i}.2"
            _run(["ip", "-n", coordinator, "addr", "add", f"{SUBNET_PREFIX}.{i}.1/30", "dev", near])
            _run(["ip", "-n", netns, "addr", "add", f"{address}/30", "dev", far])
            for ns, dev in ((coordinator, near), (netns, far)):
                # room for a tunnel's headers around a 1500-byte frame, as jumbo frames give between servers
                _run(["ip", "-n", ns, "link", "set", dev, "mtu", str(UNDERLAY_MTU)])
                # receive offload on the server's NIC, as real NICs have: a tunnel's packets arrive coalesced
                _run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"])
            for ns, dev in ((coordinator, near), (netns, far), (netns, "lo")):
                _run(["ip", "-n", ns, "link", "set", dev, "up"])
            # the servers reach each other through the coordinator namespace, as on one switch
            _run(["ip", "-n", netns, "route", "add", f"{SUBNET_PREFIX}.0.0/16", "via", f"{SUBNET_PREFIX}.{i}.1"])

            host_key = workdir / f"{name}_host_ed25519"
            known.append(f"{address} {_keygen(host_key, f'corridor-local-{name}')}")
            config = workdir / f"{name}_sshd_config"
            config.write_text(sshd_config(address=address, host_key=host_key, authorized_keys=authorized,
                                          pid_file=workdir / f"{name}_sshd.pid"), encoding="utf-8")
            held = cpus[i - 1] if cpus is not None and i - 1 < len(cpus) else None
            proc = _start_sshd(workdir, name, netns, held)
            procs.append(proc)
            servers.append(LocalServer(name=name, netns=netns, address=address, sshd_pid=proc.pid))

        known_hosts = workdir / "known_hosts"
        known_hosts.write_text("\n".join(known) + "\n", encoding="utf-8")
        lines = ["servers:"]
        for i, server in enumerate(servers):
            stated = cores[i] if cores is not None and i < len(cores) else None
            extra = f", cores: {stated}" if stated is not None else ""
            lines.append(f"  {server.name}: {{address: {server.address}, user: root, key: {user_key}, "
                         f"python: {python}{extra}}}")
        lines.append(f"known_hosts: {known_hosts}")
        cluster_file = workdir / "cluster.yaml"
        cluster_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        made = LocalCluster(coordinator_netns=coordinator, servers=tuple(servers), cluster_file=cluster_file,
                            user_key=user_key, known_hosts=known_hosts, workdir=workdir,
                            cpus=tuple(cpus) if cpus is not None else ())
        try:
            yield made
        finally:
            procs.extend(made.restarted)
    finally:
        for proc in procs:
            _stop(proc)
        for netns in reversed(made_netns):
            for pid in namespace_pids(netns):  # sessions the test left behind, started through our sshd
                _end(pid)
            done = subprocess.run(["ip", "netns", "del", netns], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                log.warning("could not delete namespace %s: %s", netns, done.stderr.strip())
            forget_scratch_netns(netns)
