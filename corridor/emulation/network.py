"""CorridorNetwork: a running emulated corridor, built from a plan and always torn down.

Stage: emulation (root). Implements :class:`corridor.emulation.api.Network` on
top of Mininet with the node classes in :mod:`corridor.emulation.nodes`. The
network is built on ``__enter__`` and removed on ``__exit__`` whatever happened:
a normal exit, an exception, Ctrl-C or SIGTERM (turned into an exception while
the network is up). Every node shell and every process started in a host is
recorded in the run's state file first, so ``corridor clean`` can remove what a
``kill -9`` left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import subprocess
import threading
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from corridor.emulation.api import package_env
from corridor.emulation.state import RunState
from corridor.errors import EmulationError, NeedsRootError
from corridor.planning.plan import Plan

if TYPE_CHECKING:
    from corridor.cluster.build import ClusterLayout
    from corridor.cluster.logins import ShellLogins
    from corridor.cluster.spec import ClusterSpec
    from corridor.cluster.ssh import SharedConnections
    from corridor.emulation.faultsched import LinkSchedule
    from corridor.spec.faults import LinkChange

log = logging.getLogger(__name__)

#: Seconds a server of a cluster network has to run `true` before it counts as lost.
LOST_SERVER_TIMEOUT_S = 20.0


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a network was up; unwinds like Ctrl-C so teardown runs."""


def require_root(what: str = "building an emulated network") -> None:
    if os.geteuid() != 0:
        raise NeedsRootError(
            f"{what} needs root (network namespaces, veth pairs and tc); run it again with sudo"
        )


def resolve_backend(requested: str) -> tuple[str, str]:
    """(backend, reason) for ``auto``, ``netem`` or ``userspace``; only auto and netem need the probe."""
    if requested == "userspace":
        return "userspace", "requested with --link-backend userspace"
    from corridor.links.select import choose_backend

    choice = choose_backend(requested)
    return choice.name, choice.reason


def _import_mininet() -> Any:
    try:
        from mininet import net as mininet_net
    except ImportError as exc:
        raise EmulationError(
            "Mininet's Python module is not importable here; install it (apt install mininet) and use a "
            "virtual environment made from /usr/bin/python3 with --system-site-packages (scripts/setup.sh does)"
        ) from exc
    return mininet_net


def _end_children(children: list[subprocess.Popen[bytes]], grace_s: float = 2.0) -> None:
    """SIGTERM every child still running, SIGKILL what is left after ``grace_s``, reap them all."""
    running = [c for c in children if c.poll() is None]
    for child in running:
        child.terminate()
    for child in running:
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class CorridorNetwork:
    """A running corridor. Use as a context manager::

        with CorridorNetwork(plan, backend="auto") as net:
            net.run("rem-gpu1", ["ping", "-c", "3", net.host_ip("cty-gpu1")])
    """

    def __init__(
        self,
        plan: Plan,
        *,
        backend: str = "auto",
        time_scale: float = 1.0,
        seed: int = 1,
        label: str | None = None,
        cluster: ClusterSpec | None = None,
        say: Any = None,
    ) -> None:
        if time_scale <= 0:
            raise EmulationError(f"time scale must be positive, got {time_scale}")
        self.requested_backend = backend
        self.time_scale = float(time_scale)
        self.seed = seed
        self.label = label or plan.name
        self.unscaled_plan = plan
        self.plan = plan
        self.backend = ""
        self.backend_reason = ""
        self.sysctls: dict[str, str] = {}
        self._net: Any = None
        self._state: RunState | None = None
        self._old_sigterm: Any = None
        self._children: list[subprocess.Popen[bytes]] = []
        #: CPUs the traffic's processes keep to (CORRIDOR_LINK_STEERING=exclusive), or None: anywhere
        self._traffic_cpus: list[int] | None = None
        self._lock = threading.Lock()
        self._command_ids: dict[str, int] = {}
        self._schedules: dict[str, list[LinkSchedule]] = {}
        self.cluster = cluster
        self.layout: ClusterLayout | None = None
        self._shared: SharedConnections | None = None
        self._logins: ShellLogins | None = None
        self.mtu = 1500  # every emulated interface's; lower on a cluster whose tunnels cannot carry 1500 bytes
        self._say = say

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> CorridorNetwork:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        require_root()
        mininet_net = _import_mininet()
        from corridor.emulation.topo import CorridorTopo, host_sysctls, scale_plan
        if self.cluster is not None and self.requested_backend == "auto":
            self.backend, self.backend_reason = "userspace", (
                "auto on a cluster: the userspace delay line (sch_netem is not probed on the servers; after "
                "`corridor doctor --cluster` shows it on each, ask for --link-backend netem)")
        else:
            self.backend, self.backend_reason = resolve_backend(self.requested_backend)
        self.plan = scale_plan(self.unscaled_plan, self.time_scale)
        self.sysctls = host_sysctls(self.plan)
        remote: dict[str, dict[str, Any]] = {}
        wire_directions: dict[str, Any] = {}
        link_cls: Any = None
        if self.cluster is not None:
            from corridor.cluster.build import prepare_cluster
            from corridor.cluster.remote import VxlanLink

            # before anything is built: a link its tunnel cannot carry is refused here
            self.layout = prepare_cluster(self.plan, self.cluster, say=self._say)
            remote, wire_directions, link_cls = self.layout.node_params(), self.layout.wire_directions, VxlanLink
            from corridor.cluster.remote import shell_logins

            self._logins = shell_logins(self.layout.cluster.known_hosts_path)
            for params in remote.values():
                params["logins"] = self._logins
        self._install_sigterm()
        self._state = RunState.create(self.label)
        state = self._state

        def record(name: str, node: Any) -> None:
            if getattr(node, "isRemote", False):
                # a node on a server: its shell here is the ssh session; ending that ends the node there
                state.record_process(f"proc:{name}@{node.server}:shell", node.shell.pid)
            else:
                state.record_node(name, node.pid)

        class RecordingMininet(mininet_net.Mininet):  # type: ignore[misc, name-defined]
            """Mininet that writes each node's shell pid to the state file as soon as it exists."""

            def addHost(self, name: str, cls: Any = None, **params: Any) -> Any:  # noqa: N802
                node = super().addHost(name, cls=cls, **params)
                record(name, node)
                return node

            def addSwitch(self, name: str, cls: Any = None, **params: Any) -> Any:  # noqa: N802
                node = super().addSwitch(name, cls=cls, **params)
                record(name, node)
                return node

        topo = CorridorTopo(plan=self.plan, backend=self.backend, state_dir=str(state.directory), seed=self.seed,
                            remote=remote, wire_directions=wire_directions,
                            remote_state_dir=self._remote_state_dir(state))
        try:
            if self.layout is not None:
                from corridor.cluster.ssh import SharedConnections

                # one connection per server for the build's and the run's short commands (each would log in
                # anew); each master is in the state file, so `corridor clean` ends one a killed run left
                self._shared = SharedConnections(self.layout.cluster, state.directory)
                self._shared.open([self.layout.cluster.server(name) for name in self.layout.server_ips],
                                  record=lambda name, pid: state.record_process(f"proc:ssh-master@{name}", pid))
            if self._say is not None and self.cluster is not None:
                self._say(f"building {self.plan.name} across {len(self.layout.server_ips) if self.layout else 0} "
                          "servers")
            if self._logins is not None and self.layout is not None:
                # every node's shell logs in now, several at once, instead of one by one as Mininet creates it
                self._logins.start(
                    [(node, self.layout.cluster.server(server)) for node, server in self.layout.placement.nodes],
                    record=lambda node, server, pid: state.record_process(f"proc:{node}@{server}:shell", pid))
            extra = {"link": link_cls} if link_cls is not None else {}
            self._net = RecordingMininet(topo=topo, controller=None, build=False, waitConnected=False, **extra)
            self._net.build()
            if self._logins is not None:
                self._logins.close()  # none is left once every node has its shell; any that is ends here
            line_cpus = set()
            for link in self.plan.wan_links:
                wire = self._net.get(link.wire)
                if getattr(wire, "delayline", None) is not None:
                    state.record_process(f"proc:{link.wire}:delayline", wire.delayline.pid)
                if getattr(wire, "placement", None) is not None:
                    line_cpus.add(wire.placement.cpu)
            from corridor.links import steering

            self._traffic_cpus = steering.traffic_cpus(line_cpus)
            if self.cluster is not None:
                self._fit_mtu()
            self._net.start()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, (EmulationError, KeyboardInterrupt)):
                raise
            raise EmulationError(f"building the {self.plan.name} network failed: {exc}") from exc
        log.info("network %s up with the %s backend (%s)", self.plan.name, self.backend, self.backend_reason)

    def _remote_state_dir(self, state: RunState) -> str | None:
        if self.layout is None:
            return None
        return self.layout.remote_state_dir(state.directory.name)

    def _fit_mtu(self) -> None:
        """Lower every emulated interface to the smallest tunnel MTU, if a tunnel cannot carry 1500 bytes.

        A frame larger than the tunnel takes is dropped without a word at layer 2;
        with every interface at the tunnel's MTU, hosts size their segments to fit.
        """
        from corridor.cluster.remote import EMULATED_MTU

        mtus = [link.mtu for link in self._net.links if getattr(link, "mtu", None)]
        smallest = min(mtus, default=EMULATED_MTU)
        if smallest >= EMULATED_MTU:
            return
        log.warning("the network between the servers carries %d-byte frames in a tunnel: every emulated "
                    "interface gets MTU %d", smallest, smallest)
        for node in (*self._net.hosts, *self._net.switches):
            for intf in node.intfList():
                if intf.name != "lo":
                    node.cmd(f"ip link set dev {intf.name} mtu {smallest}")
        self.mtu = smallest

    def stop(self) -> None:
        """Tear everything down; safe to call twice and after a failed start."""
        with self._lock:
            net, self._net = self._net, None
            state, self._state = self._state, None
            children, self._children = self._children, []
        run_id = state.directory.name if state is not None else None
        try:
            # Our own children first, by handle: one may not have entered its namespace yet
            # (mnexec attaches, then execs), so a sweep by namespace alone could miss it.
            _end_children(children)
            if self._logins is not None:  # shells logged in ahead of a build that failed before taking them
                self._logins.close()
            if state is not None:
                nodes = state.read().get("nodes", {})
                shells = {int(n["pid"]) for k, n in nodes.items() if not k.startswith("proc:")}
                # End workload processes first (Mininet would leave them running), then Mininet's teardown.
                state.end_processes(spare=shells)
            if net is not None:
                try:
                    net.stop()
                except Exception as exc:  # teardown must go on; the namespace sweep below finishes it
                    log.warning("Mininet teardown reported: %s", exc)
        finally:
            try:
                if state is not None:
                    state.end_processes()
                if self.layout is not None and run_id is not None:  # also after a build that failed half-way
                    for problem in self.layout.remove_remote_state(run_id):
                        log.warning("could not remove this run's files on server %s", problem)
            finally:
                try:
                    if self._shared is not None:  # after the last command to the servers
                        self._shared.close()
                        self._shared = None
                    if state is not None:
                        state.release()
                finally:
                    self._restore_sigterm()

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            raise Terminated(f"signal {signum}")

        self._old_sigterm = signal.signal(signal.SIGTERM, handler)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # -- Network protocol -----------------------------------------------------
    def hosts(self) -> list[str]:
        return [h.name for site in self.plan.sites for h in site.hosts]

    def host_ip(self, host: str) -> str:
        return self.plan.host(host).ip

    def host_site(self, host: str) -> str:
        return self.plan.host(host).site

    def node(self, name: str) -> Any:
        if self._net is None:
            raise EmulationError("the network is not running")
        try:
            return self._net.get(name)
        except KeyError:
            raise EmulationError(f"no node {name!r} in {self.plan.name}") from None

    def popen(self, host: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        node = self.node(host)
        if self._traffic_cpus and not getattr(node, "isRemote", False):
            from corridor.links.steering import pinned_argv

            argv = pinned_argv(self._traffic_cpus, argv)  # CORRIDOR_LINK_STEERING=exclusive
        kwargs.setdefault("env", package_env())
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc: subprocess.Popen[bytes] = node.popen(list(argv), **kwargs)
        with self._lock:
            self._children.append(proc)
        if self._state is not None:
            self._state.record_process(f"proc:{host}:{proc.pid}", proc.pid)
        return proc

    def run(self, host: str, argv: Sequence[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        proc = self.popen(host, argv)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise EmulationError(f"{host}: {' '.join(argv)} did not finish within {timeout_s:g} s") from None
        return subprocess.CompletedProcess(list(argv), proc.returncode, out.decode(errors="replace"),
                                           err.decode(errors="replace"))

    # -- inspection -------------------------------------------------------------
    def link_stats(self, link_name: str) -> dict[str, Any]:
        link = self.plan.link(link_name)
        stats: dict[str, Any] = self.node(link.wire).link_stats()
        return stats

    def link_alive(self, link_name: str) -> bool | None:
        """Whether the process carrying ``link_name`` runs: the delay line (userspace); None with netem (no process)."""
        alive: bool | None = self.wire_node(link_name).delayline_alive()
        return alive

    def link_pid(self, link_name: str) -> int | None:
        """The pid of the delay line carrying ``link_name`` (userspace backend), or None."""
        proc = getattr(self.wire_node(link_name), "delayline", None)
        return None if proc is None else int(proc.pid)

    @contextlib.contextmanager
    def capture(self, link_name: str, out_path: str, *, facing: str | None = None) -> Any:
        """Record a WAN link into a pcap while the body runs (tcpdump inside the link's wire node).

        The interface faces one site's router, so every packet crossing the link passes it once.
        Yields a dict that holds tcpdump's summary (``dropped_by_kernel``) after the body.
        """
        from corridor.tools import capture as cap
        wire, intf = cap.wire_interface(self.plan, link_name, facing=facing)
        info: dict[str, Any] = {"path": out_path, "link": link_name, "interface": intf}
        if getattr(self.node(wire), "isRemote", False):
            # On a server, tcpdump writes the pcap to its stdout, which ssh brings here into the file; closing
            # its stdin stops it (the leash sends SIGTERM), so it flushes the last packets before the end.
            with open(out_path, "wb") as sink:
                proc = self.popen(wire, cap.tcpdump_argv(intf, "-"), stdin=subprocess.PIPE, stdout=sink,
                                  stderr=subprocess.PIPE, stop_at_stdin_end=True)
            info["server"] = self.node(wire).server
            stop = cap.stop_by_stdin
        else:
            proc = self.popen(wire, cap.tcpdump_argv(intf, out_path), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
            stop = cap.stop
        try:
            cap.start(proc)
            yield info
        finally:
            summary = stop(proc)
            info["dropped_by_kernel"] = cap.dropped_by_kernel(summary)

    def wire_node(self, link_name: str) -> Any:
        return self.node(self.plan.link(link_name).wire)

    # -- faults -------------------------------------------------------------------
    def schedule_link_events(self, link_name: str, changes: Sequence[LinkChange], t0_monotonic_s: float
                             ) -> LinkSchedule:
        """Change ``link_name`` in place at ``t0_monotonic_s + change.at_s`` for each change (a fault schedule).

        Userspace backend: every change goes to the delay line at once with its due
        monotonic time, and the delay line applies it at that time (its own timer).
        Netem backend: a thread runs ``tc qdisc change`` in the wire node at each due
        time. :meth:`reset_link` cancels what is pending and restores the link.
        """
        from corridor.emulation.faultsched import LinkSchedule

        self._refuse_on_cluster("a fault schedule")
        wire = self.wire_node(link_name)
        with self._lock:
            first_id = self._command_ids.get(link_name, 0) + 1
            self._command_ids[link_name] = first_id + len(changes)
        schedule = LinkSchedule(link_name, wire, list(changes), t0_monotonic_s, first_id=first_id)
        schedule.start()
        with self._lock:
            self._schedules.setdefault(link_name, []).append(schedule)
        return schedule

    def reset_link(self, link_name: str) -> None:
        """Drop every pending change of ``link_name`` and put it back on its own parameters now."""
        with self._lock:
            schedules = self._schedules.pop(link_name, [])
        for schedule in schedules:
            schedule.cancel()
        from corridor.emulation.faultsched import restore_link

        restore_link(self.wire_node(link_name))

    def _refuse_on_cluster(self, what: str) -> None:
        if self.cluster is not None:
            raise EmulationError(f"{what} is not supported on a network spread over servers yet; run it on one "
                                 "machine (without --cluster)")

    def lost_servers(self, *, timeout_s: float = LOST_SERVER_TIMEOUT_S) -> dict[str, str]:
        """Servers of a cluster network that no longer answer, each with what showed it (empty on one machine).

        A server is lost when the ssh session of one of its nodes has ended (a
        node's shell ends only with the network) or when a new login does not
        run ``true`` within ``timeout_s``; one login per server, in parallel.
        """
        net = self._net
        if self.cluster is None or net is None:
            return {}
        nodes: dict[str, list[Any]] = {}
        for node in (*net.hosts, *net.switches):
            if getattr(node, "isRemote", False):
                nodes.setdefault(str(node.server), []).append(node)
        lost: dict[str, str] = {}

        def ask(server: str, first: Any) -> None:
            try:
                done = first.server_run(["true"], timeout_s=timeout_s)
            except EmulationError as exc:
                lost.setdefault(server, str(exc))
                return
            if done.returncode != 0:
                lost.setdefault(server, f"`true` exited {done.returncode} there: {done.stderr.strip()[-200:]}")

        for server, members in nodes.items():
            ended = [n.name for n in members if n.shell is None or n.shell.poll() is not None]
            if ended:
                more = f" and {len(ended) - 4} more" if len(ended) > 4 else ""
                lost[server] = f"the ssh sessions of {', '.join(sorted(ended)[:4])}{more} ended"
        threads = [threading.Thread(target=ask, args=(server, members[0]), name=f"ask-{server}", daemon=True)
                   for server, members in nodes.items() if server not in lost]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout_s + 5.0)
        return dict(sorted(lost.items()))

    def tunnel_share_ms(self, link_name: str) -> float:
        """One-way delay of ``link_name`` that its cross-server tunnels carry (0 on one machine)."""
        return 0.0 if self.layout is None else self.layout.tunnel_share(link_name)

    def describe(self) -> dict[str, Any]:
        """What a run directory records about the network it ran on."""
        out = {
            "plan": self.plan.name,
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "time_scale": self.time_scale,
            "link_seed": self.seed,
            "host_sysctls": self.sysctls,
            "kernel": platform.release(),
        }
        if self.layout is not None:
            cluster: dict[str, Any] = {**self.layout.describe(), "mtu": self.mtu}
            if self._logins is not None:
                cluster["shell_logins"] = self._logins.describe()
            out["cluster"] = cluster
        return out
