"""The cluster file: which servers a corridor may spread over, and which sites are pinned where.

Stage: spec (pure). A cluster file is YAML::

    servers:
      alpha: {address: 192.0.2.10, user: root, key: ~/.ssh/corridor_ed25519, cores: 8}
      beta:  {address: 192.0.2.11, user: ops, key: keys/beta, port: 2222, python: /opt/corridor/.venv/bin/python}
    pins:                 # optional: these sites go to these servers, whatever the placer would pick
      urumqi: alpha
    known_hosts: keys/known_hosts   # optional: check the servers' host keys against this file only

It loads into a frozen :class:`ClusterSpec`, validated on load: an unknown key, a
missing field, a bad port or core count, or a pin to an unknown server is a
:class:`~corridor.errors.SpecError` naming the file and the dotted key. Relative
key and known_hosts paths are read from the cluster file's folder. Pins name
sites of a topology, so they are checked against a plan by the placer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from corridor.errors import SpecError
from corridor.spec.validate import check_keys, describe_value, did_you_mean
from corridor.spec.yamlio import load_yaml, loads_yaml

#: Keys of the whole file, and of one server.
FILE_KEYS = ("servers", "pins", "known_hosts")
SERVER_KEYS = ("address", "user", "key", "port", "cores", "python")
#: The interpreter a server runs corridor with when its entry names none.
DEFAULT_PYTHON = "python3"
#: A server name is also a label in tables and file names: short and plain.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
#: A host name or an IPv4/IPv6 address; nothing ssh would read as an option or a user.
_ADDRESS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]*$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
MAX_CORES = 4096
_EXAMPLE = {"address": "192.0.2.10", "user": "root", "key": "~/.ssh/id_ed25519"}


@dataclass(frozen=True)
class ServerSpec:
    """One server a corridor may use, reached over ssh with a key."""

    name: str
    address: str
    user: str
    key_path: str  # absolute, with ~ expanded
    port: int = 22
    cores: int | None = None  # None: not stated, so the placer sets no limit on this server
    python: str = DEFAULT_PYTHON  # the server's interpreter that imports corridor and mininet

    @property
    def destination(self) -> str:
        """``user@address``, as ssh takes it."""
        return f"{self.user}@{self.address}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "user": self.user, "key_path": self.key_path,
                "port": self.port, "cores": self.cores, "python": self.python}


@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster file."""

    source: str  # the file as the user named it
    servers: tuple[ServerSpec, ...]
    pins: tuple[tuple[str, str], ...] = ()  # (site, server) in file order
    known_hosts_path: str | None = None  # absolute; None: ssh's own known_hosts files
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def server(self, name: str) -> ServerSpec:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.servers)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "servers": [s.as_dict() for s in self.servers],
                "pins": dict(self.pins), "known_hosts_path": self.known_hosts_path}


class _Reader:
    def __init__(self, path: str, base_dir: Path) -> None:
        self.path = path
        self.base_dir = base_dir

    def fail(self, key: str | None, message: str) -> NoReturn:
        raise SpecError(message, path=self.path, key=key)

    def mapping(self, value: object, key: str | None, what: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a mapping of {what}, got {describe_value(value)}")
        for k in value:
            if not isinstance(k, str):
                self.fail(key, f"keys must be names, got {k!r}")
        return value

    def text(self, value: object, key: str, pattern: re.Pattern[str], what: str) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            self.fail(key, f"expected {what}, got {describe_value(value)}")
        return value

    def file_path(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip() or "\n" in value or "\0" in value:
            self.fail(key, f"expected a file path, got {describe_value(value)}")
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            path = self.base_dir / path
        return os.path.normpath(path)

    def integer(self, value: object, key: str, low: int, high: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected {what} (a whole number {low}-{high}), got {describe_value(value)}")
        if not low <= value <= high:
            self.fail(key, f"{what} {value} is out of range; allowed {low}-{high}")
        return value





def _server(reader: _Reader, name: str, value: object) -> ServerSpec:
    where = f"servers.{name}"
    if not _NAME.match(name):
        reader.fail(where, "a server name is a letter then up to 31 letters, digits, '-' or '_'")
    data = reader.mapping(value, where, "server fields (address, user, key, and optionally port, cores, python)")
    check_keys(data, SERVER_KEYS, path=reader.path, where=where)
    for required in ("address", "user", "key"):
        if required not in data:
            reader.fail(f"{where}.{required}", "missing; every server needs address, user and key (the ssh "
                        f"private key that logs in as user), e.g. {required}: {_EXAMPLE[required]}")
    address = reader.text(data["address"], f"{where}.address", _ADDRESS, "a host name or IP address")
    user = reader.text(data["user"], f"{where}.user", _USER, "a login name such as root")
    key_path = reader.file_path(data["key"], f"{where}.key")
    port = reader.integer(data.get("port", 22), f"{where}.port", 1, 65535, "a TCP port")
    cores = None
    if data.get("cores") is not None:
        cores = reader.integer(data["cores"], f"{where}.cores", 1, MAX_CORES, "a core count")
    python = data.get("python", DEFAULT_PYTHON)
    if not isinstance(python, str) or not python or any(c.isspace() for c in python) or python.startswith("-"):
        reader.fail(f"{where}.python", f"expected the server's python command or path, without spaces, "
                    f"got {describe_value(python)}")
    return ServerSpec(name=name, address=address, user=user, key_path=key_path, port=port, cores=cores,
                      python=python)


def parse_cluster(data: object, *, path: str, base_dir: Path) -> ClusterSpec:
    """A parsed YAML document into a :class:`ClusterSpec`; raises SpecError naming ``path`` and the key."""
    reader = _Reader(path, base_dir)
    top = reader.mapping(data, None, "servers (and optionally pins, known_hosts)")
    check_keys(top, FILE_KEYS, path=path)
    if "servers" not in top:
        reader.fail("servers", "missing; a cluster file names at least one server under servers:")
    raw_servers = reader.mapping(top["servers"], "servers", "server names to their fields")
    if not raw_servers:
        reader.fail("servers", "no servers; name at least one")
    servers = tuple(_server(reader, name, value) for name, value in raw_servers.items())
    seen: dict[tuple[str, int], str] = {}
    for server in servers:
        target = (server.address, server.port)
        if target in seen:
            reader.fail(f"servers.{server.name}.address", f"{server.address} port {server.port} is already "
                        f"server {seen[target]!r}; each server is one ssh destination")
        seen[target] = server.name
    names = [s.name for s in servers]
    pins: list[tuple[str, str]] = []
    raw_pins = top.get("pins")
    if raw_pins is not None:
        for site, server_name in reader.mapping(raw_pins, "pins", "site names to server names").items():
            if server_name not in names:
                reader.fail(f"pins.{site}", f"unknown server {server_name!r}; "
                            f"{did_you_mean(server_name, names)}servers: {', '.join(names)}")
            pins.append((site, str(server_name)))
    known_hosts = None
    if top.get("known_hosts") is not None:
        known_hosts = reader.file_path(top["known_hosts"], "known_hosts")
    return ClusterSpec(source=path, servers=servers, pins=tuple(pins), known_hosts_path=known_hosts)


def load_cluster(path: str | os.PathLike[str]) -> ClusterSpec:
    """Read and validate the cluster file at ``path``."""
    shown = os.fspath(path)
    data = load_yaml(path, shown=shown)
    return parse_cluster(data, path=shown, base_dir=Path(os.path.abspath(shown)).parent)


def loads_cluster(text: str, *, path: str = "<string>", base_dir: Path | None = None) -> ClusterSpec:
    """Validate a cluster file given as text (tests, tools); relative paths are read from ``base_dir``."""
    return parse_cluster(loads_yaml(text, path=path), path=path, base_dir=base_dir or Path.cwd())
