"""Mininet node classes for a corridor: site bridge, site router, WAN wire.

Stage: emulation (root). Behaviour is plugged into Mininet by class, the way
Mininet itself is meant to be extended: :class:`SiteBridge` replaces
LinuxBridge (iproute2 instead of brctl/ifconfig, and it lives in its own network
namespace so nothing of a corridor touches the root namespace), :class:`SiteRouter`
forwards between a site's LAN and its WAN links with static routes from the
plan, and :class:`WireNode` carries one WAN link and runs the chosen link
backend between its two interfaces. Every node, switches included, lives in an
unnamed network namespace owned by its Mininet shell, so ending those shells
removes every namespace and interface of a run.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import zlib
from collections.abc import Sequence
from typing import Any

from mininet.node import Node, Switch

from corridor.errors import EmulationError
from corridor.links.backends import LinkBackend, get_backend
from corridor.links.contract import LinkDirection

log = logging.getLogger(__name__)

#: sysctls every corridor namespace gets: no IPv6 chatter in the counters.
BASE_SYSCTLS: dict[str, str] = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


def run_in(node: Node, argv: Sequence[str], *, timeout_s: float = 20.0, check: bool = True) -> str:
    """Run ``argv`` inside ``node``'s namespace and return its output; raise on failure.

    A node on a cluster's server runs it in its shell, which is already connected
    (one ssh login per command would make building a network take minutes).
    """
    if getattr(node, "isRemote", False):
        try:
            returncode, text = node.shell_run(list(argv))
        except EmulationError as exc:
            if check:
                raise
            log.warning("%s", exc)  # best effort (a teardown): a node whose server is gone is gone already
            return ""
        if check and returncode != 0:
            raise EmulationError(f"{node.name}: `{shlex.join(argv)}` failed (exit {returncode}): {text}")
        return text
    proc = node.popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise EmulationError(f"{node.name}: `{shlex.join(argv)}` did not finish within {timeout_s:g} s") from None
    text = out.decode(errors="replace").strip()
    if check and proc.returncode != 0:
        raise EmulationError(f"{node.name}: `{shlex.join(argv)}` failed (exit {proc.returncode}): {text}")
    return text


def apply_sysctls(node: Node, sysctls: dict[str, str]) -> None:
    if not sysctls:
        return
    run_in(node, ["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in sysctls.items())])


class CorridorHost(Node):
    """A traffic host (GPU server, client, store): one interface, default route via its site router."""

    def config(self, sysctls: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:  # type: ignore[override]
        result = super().config(**params)
        apply_sysctls(self, {**BASE_SYSCTLS, **(sysctls or {})})
        return result


class SiteRouter(Node):
    """A site's gateway: forwards between its LAN and its WAN transit subnets."""

    def config(  # type: ignore[override]
        self, routes: Sequence[tuple[str, str, str]] = (), sysctls: dict[str, str] | None = None, **params: Any
    ) -> dict[str, Any]:
        result = super().config(**params)
        apply_sysctls(
            self,
            {
                **BASE_SYSCTLS,
                "net.ipv4.ip_forward": "1",
                "net.ipv4.conf.all.rp_filter": "0",
                "net.ipv4.conf.default.rp_filter": "0",
                **(sysctls or {}),
            },
        )
        for dest, via, intf in routes:
            run_in(self, ["ip", "route", "replace", dest, "via", via, "dev", intf])
        return result


class SiteBridge(Switch):
    """A site's LAN switch: a Linux bridge inside its own namespace, configured with iproute2."""

    def __init__(self, name: str, **params: Any) -> None:
        params["inNamespace"] = True
        # No OpenFlow here, but Mininet's Switch wants a datapath id; derive a stable one from the name.
        params.setdefault("dpid", f"{zlib.crc32(name.encode()):016x}")
        super().__init__(name, **params)

    def start(self, controllers: Sequence[Any]) -> None:  # noqa: ARG002 - no controller for a bridge
        apply_sysctls(self, BASE_SYSCTLS)
        run_in(self, ["ip", "link", "add", "name", self.name, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        for intf in self.intfList():
            if intf.name == "lo":
                continue
            run_in(self, ["ip", "link", "set", intf.name, "master", self.name])
            run_in(self, ["ip", "link", "set", intf.name, "up"])
        run_in(self, ["ip", "link", "set", self.name, "up"])

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 - Mininet's signature
        run_in(self, ["ip", "link", "del", self.name], check=False)
        super().stop(deleteIntfs)

    def connected(self) -> bool:
        return True


class WireNode(Node):
    """One WAN link: two interfaces and the link backend between them.

    ``a_to_b`` shapes frames that arrive on ``intf_a`` and leave on ``intf_b``;
    ``b_to_a`` the reverse. Backend "userspace" runs the delay-line process here;
    "netem" bridges the two interfaces and puts tc qdiscs on each egress.
    """

    def __init__(self, name: str, **params: Any) -> None:
        super().__init__(name, **params)
        self.delayline: subprocess.Popen[bytes] | None = None
        self.stats_path: str | None = None
        self.control_path: str | None = None
        self.log_path: str | None = None
        self.link_intfs: tuple[str, str] | None = None
        self.link_directions: tuple[LinkDirection, LinkDirection] | None = None
        self.backend: LinkBackend | None = None
        #: the delay line's CPU and its receivers' mask (corridor.links.steering), when steered
        self.placement: Any = None
        #: how many WAN links (each a delay line) the whole network has: steering holds only while they fit the CPUs
        self.network_lines = 1

    #: seconds between looks for the delay line's readiness file
    ready_poll_s = 0.02

    def config(  # type: ignore[override]
        self,
        backend: str = "userspace",
        a_to_b: LinkDirection | None = None,
        b_to_a: LinkDirection | None = None,
        intf_a: str | None = None,
        intf_b: str | None = None,
        stats_path: str | None = None,
        log_path: str | None = None,
        seed: int = 1,
        network_lines: int = 1,
        **params: Any,
    ) -> dict[str, Any]:
        result = super().config(**params)
        self.log_path = log_path
        self.network_lines = network_lines
        if a_to_b is None or b_to_a is None or intf_a is None or intf_b is None:
            raise EmulationError(f"wire {self.name}: both directions and both interfaces are required")
        apply_sysctls(self, BASE_SYSCTLS)
        for intf in (intf_a, intf_b):
            run_in(self, ["ip", "link", "set", intf, "up"])
        self.link_intfs = (intf_a, intf_b)
        self.link_directions = (a_to_b, b_to_a)
        self.backend = get_backend(backend)
        self.backend.start(self, intf_a, intf_b, a_to_b, b_to_a, stats_path=stats_path, seed=seed)
        return result

    def run_argv(self, argv: list[str], *, check: bool = True) -> str:
        """Run ``argv`` in this wire's namespace (the backend's way in)."""
        return run_in(self, argv, check=check)

    # Files the backend's process writes, where this wire runs (here; see RemoteWireNode for a server's).
    def file_exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read_text(self, path: str) -> str:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise EmulationError(f"wire {self.name}: cannot read {path}: {exc.strerror or exc}") from exc

    def remove_file(self, path: str) -> None:
        if os.path.lexists(path):
            os.unlink(path)

    def receivers(self) -> list[tuple[str, str]] | None:
        """``(netns file, interface)`` of the peers of this wire's two interfaces: where its link's frames land.

        None unless the wire and both peers are nodes on this machine (a cluster's remote wire steers nothing).
        """
        if self.link_intfs is None or getattr(self, "isRemote", False):
            return None
        targets = []
        for name in self.link_intfs:
            intf = self.nameToIntf.get(name)
            link = getattr(intf, "link", None)
            if intf is None or link is None:
                return None
            peer = link.intf2 if link.intf1 is intf else link.intf1
            node = peer.node
            if getattr(node, "isRemote", False) or not getattr(node, "pid", None):
                return None
            targets.append((f"/proc/{node.pid}/ns/net", peer.name))
        return targets

    def delayline_alive(self) -> bool | None:
        """Whether the process carrying this link still runs; None for a backend without one (netem)."""
        return None if self.backend is None else self.backend.alive(self)

    def link_stats(self) -> dict[str, Any]:
        """Per-direction counters of the link, as its backend reads them."""
        if self.backend is None:
            raise EmulationError(f"wire {self.name}: no link backend was started")
        return self.backend.stats(self)

    def terminate(self) -> None:
        if self.backend is not None:
            self.backend.stop(self)
        super().terminate()
