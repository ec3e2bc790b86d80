"""The cluster file (corridor.cluster.spec): servers, pins and known_hosts, validated on load."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from corridor.cluster.spec import DEFAULT_PYTHON, load_cluster, loads_cluster
from corridor.errors import SpecError

GOOD = """
servers:
  alpha: {address: 192.0.2.10, user: root, key: keys/alpha, cores: 8}
  beta: {address: beta.example, user: ops, key: ~/.ssh/beta, port: 2222, python: /opt/c/bin/python}
pins:
  urumqi: alpha
  beijing: beta
known_hosts: keys/known_hosts
"""


def test_good_file_loads_with_paths_from_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(GOOD, encoding="utf-8")
    cluster = load_cluster(path)
    alpha, beta = cluster.servers
    assert cluster.server_names == ("alpha", "beta")
    assert (alpha.address, alpha.user, alpha.port, alpha.cores, alpha.python) == (
        "192.0.2.10", "root", 22, 8, DEFAULT_PYTHON)
    assert alpha.key_path == str(tmp_path / "keys" / "alpha")
    assert beta.key_path == str(Path("~/.ssh/beta").expanduser())
    assert (beta.port, beta.cores, beta.python, beta.destination) == (2222, None, "/opt/c/bin/python",
                                                                       "ops@beta.example")
    assert cluster.pins == (("urumqi", "alpha"), ("beijing", "beta"))
    assert cluster.known_hosts_path == str(tmp_path / "keys" / "known_hosts")
    assert cluster.server("beta") is beta
    data = json.loads(json.dumps(cluster.as_dict()))
    assert data["pins"] == {"urumqi": "alpha", "beijing": "beta"}
    assert [s["name"] for s in data["servers"]] == ["alpha", "beta"]


def test_minimal_file_has_no_pins_and_no_known_hosts() -> None:
    cluster = loads_cluster("servers: {a: {address: 10.0.0.1, user: root, key: /k}}")
    assert cluster.pins == () and cluster.known_hosts_path is None
    assert cluster.servers[0].key_path == "/k"


def server(extra: str) -> str:
    return "servers:\n  alpha: {address: 10.0.0.1, user: root, key: /k" + extra + "}\n"


BAD = [
    ("[1, 2]", "<c>: expected a mapping", None),
    ("servers: {}", "no servers", "servers"),
    ("pins: {a: b}", "missing", "servers"),
    ("servers: {a: {address: 10.0.0.1, user: root, key: /k}}\nhosts: 1", "unknown key 'hosts'", "hosts"),
    ("servers: {a: {address: 10.0.0.1, user: root, key: /k}}\nserver: 1", "did you mean 'servers'", "server"),
    ("servers: [a, b]", "expected a mapping of server names", "servers"),
    ("servers: {1a: {address: 10.0.0.1, user: root, key: /k}}", "a server name is a letter", "servers.1a"),
    ("servers: {a: {user: root, key: /k}}", "missing", "servers.a.address"),
    ("servers: {a: {address: 10.0.0.1, key: /k}}", "missing", "servers.a.user"),
    ("servers: {a: {address: 10.0.0.1, user: root}}", "missing", "servers.a.key"),
    (server(", adress: x"), "did you mean 'address'", "servers.alpha.adress"),
    ("servers: {a: {address: -oProxyCommand=x, user: root, key: /k}}", "host name or IP", "servers.a.address"),
    ("servers: {a: {address: 10.0.0.1, user: 'root@x', key: /k}}", "login name", "servers.a.user"),
    ("servers: {a: {address: 10.0.0.1, user: root, key: ''}}", "file path", "servers.a.key"),
    (server(", port: 0"), "out of range", "servers.alpha.port"),
    (server(", port: 70000"), "out of range", "servers.alpha.port"),
    (server(", port: '22'"), "a TCP port", "servers.alpha.port"),
    (server(", cores: 0"), "out of range; allowed 1-4096", "servers.alpha.cores"),
    (server(", cores: 2.5"), "a core count", "servers.alpha.cores"),
    (server(", cores: true"), "a core count", "servers.alpha.cores"),
    (server(", python: 'python3 -I'"), "without spaces", "servers.alpha.python"),
    ("servers:\n  a: {address: 10.0.0.1, user: root, key: /k}\n  b: {address: 10.0.0.1, user: ops, key: /k}",
     "is already server 'a'", "servers.b.address"),
    (server("") + "pins: {urumqi: gamma}", "unknown server 'gamma'", "pins.urumqi"),
    (server("") + "pins: {urumqi: alpah}", "did you mean 'alpha'", "pins.urumqi"),
    (server("") + "pins: [urumqi]", "site names to server names", "pins"),
    (server("") + "known_hosts: 3", "file path", "known_hosts"),
    ("servers: {a: {address: 10.0.0.1, user: root, key: /k}}\nservers: {}", "duplicate key", None),
]


@pytest.mark.parametrize(("text", "message", "key"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_cluster_files_name_file_and_key(text: str, message: str, key: str | None) -> None:
    with pytest.raises(SpecError) as caught:
        loads_cluster(textwrap.dedent(text), path="<c>")
    assert message in str(caught.value)
    assert str(caught.value).startswith("<c>: ")
    assert caught.value.path == "<c>"
    if key is not None:
        assert caught.value.key == key


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_cluster(tmp_path / "absent.yaml")
