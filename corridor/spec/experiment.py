"""Experiment specs: which workloads run where, across which corridors, judged against which SLOs.

Stage: spec (pure). An experiment file (YAML under ``experiments/``) names a
topology (preset or file) with link overrides, the placements to compare (one
of them is always the ``local`` baseline), the workloads with their parameters
and tolerance thresholds, groups of workloads that share the corridor at the
same time (tenants), sweep axes, repetitions and a seed. It loads into frozen
dataclasses and is validated on load: an unknown key, a wrong unit or an
out-of-range value raises :class:`SpecError` naming the file, the key and what
is allowed.

Workload parameters and SLOs are handed to the owning workload kind
(:mod:`corridor.workloads.registry`), so a typo in a workload parameter is
caught here, before anything runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corridor import CHECKOUT_ROOT
from corridor.errors import SpecError
from corridor.links.backends import BACKEND_CHOICES
from corridor.spec.faults import FaultEvent, parse_faults
from corridor.spec.slo_presets import SLO_PRESETS
from corridor.spec.units import parse_distance_km, parse_duration_ms, parse_fraction, parse_rate_mbps
from corridor.spec.validate import check_choice, check_keys, check_quantity
from corridor.workloads import registry
from corridor.workloads.inference.kind import InferenceSlo
from corridor.workloads.kind import DOES_NOT_TOLERATE, INCONCLUSIVE, MARGINAL, TOLERATES, VERDICTS
from corridor.workloads.training.kind import TrainingSlo

__all__ = ["DOES_NOT_TOLERATE", "INCONCLUSIVE", "MARGINAL", "TOLERATES", "VERDICTS", "InferenceSlo", "TrainingSlo"]

#: Fibre propagation used to turn a swept distance into a one-way delay (DESIGN.md: 4.90 us/km).
FIBRE_MS_PER_KM = 0.00490

#: Sweep axes that change the WAN link (the local baseline ignores them).
WAN_AXES = ("distance_km", "delay_scale", "rate_mbps", "loss")
#: Sweep axes that apply to every placement, the local baseline included.
HOST_AXES = ("cc", "time_scale", "backend")
SWEEP_KEYS = {
    "distance": "distance_km",
    "delay_scale": "delay_scale",
    "rate": "rate_mbps",
    "loss": "loss",
    "cc": "cc",
    "time_scale": "time_scale",
    "backend": "backend",
}
BACKENDS = BACKEND_CHOICES
MAX_TIMEOUT_S = 24 * 3600.0  # a workload's own time limit: a long training run fits, a typo such as 2000h does not
CONGESTION_CONTROLS = ("bbr", "cubic", "reno")
LOCAL_PLACEMENT = "local"
LOCAL_TOPOLOGY = "local"
#: Experiment, placement, workload, tenant and role names (like topology names, plus '.', '+' and capitals:
#: tenant groups are written ``chat+dp-sync``); no '/', '|' or leading '.', so a name can neither leave
#: runs/ nor split a point id.
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")

_TOP_KEYS = {
    "name", "description", "topology", "overrides", "placements", "workloads", "tenants", "sweep",
    "repetitions", "seed", "model_only", "faults", "scale",
}
_PLACEMENT_KEYS = {"name", "topology", "servers", "clients", "ranks", "roles", "description"}
_WORKLOAD_KEYS = {"name", "type", "params", "slo", "timeout", "max_ranks", "placements", "description"}
_TENANT_KEYS = {"name", "workloads", "victim", "description"}
_OVERRIDE_KEYS = {"rate", "delay", "delay_scale", "loss", "jitter", "queue", "links"}
_TRAINING_SLO_KEYS = {"max_slowdown", "marginal_slowdown"}
_INFERENCE_SLO_KEYS = {"ttft", "tpot", "percentile", "goodput", "marginal_fraction"}


@dataclass(frozen=True)
class Placement:
    """Which sites hold the inference servers, the clients and the training ranks.

    ``roles`` maps extra inference roles (e.g. ``prefill``, ``decode``) to sites.
    ``topology`` replaces the experiment's topology (the ``local`` baseline uses
    the one-site ``local`` preset); every site list then refers to that topology.
    """

    name: str
    topology: str | None
    servers: tuple[str, ...]
    clients: tuple[str, ...]
    ranks: tuple[str, ...]
    roles: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL_PLACEMENT


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload: its module kind, pattern, validated parameters and thresholds."""

    name: str
    type: str  # the pattern name, e.g. "data-parallel"
    kind: str  # "training" or "inference"
    raw_params: Mapping[str, Any]
    params: Any  # the module's frozen params dataclass
    slo: Any  # the kind's frozen SLO (TrainingSlo, InferenceSlo, ...)
    timeout_s: float
    max_ranks: int | None
    placements: tuple[str, ...] | None = None  # None: every placement

    def runs_in(self, placement: str) -> bool:
        """Whether this workload runs in ``placement`` (the local baseline always)."""
        return placement == LOCAL_PLACEMENT or self.placements is None or placement in self.placements


@dataclass(frozen=True)
class Tenants:
    """Workloads that run at the same time on the same corridor; ``victim`` is judged against running alone."""

    name: str
    workloads: tuple[str, ...]
    victim: str


@dataclass(frozen=True)
class SweepPoint:
    """One combination of sweep values; ``None`` means "as the topology says"."""

    distance_km: float | None = None
    delay_scale: float | None = None
    rate_mbps: float | None = None
    loss: float | None = None
    cc: str | None = None
    time_scale: float = 1.0
    backend: str = "auto"

    def wan_key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, a) for a in WAN_AXES)

    def host_key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, a) for a in HOST_AXES)

    def label(self, *, wan_only: bool = False) -> str:
        """Short human label: ``"3268km 1Gbit loss 1e-04"``; ``"as specified"`` when nothing is swept."""
        parts = []
        if self.distance_km is not None:
            parts.append(f"{self.distance_km:g}km")
        if self.delay_scale is not None:
            parts.append(f"delay x{self.delay_scale:g}")
        if self.rate_mbps is not None:
            from corridor.spec.units import format_rate

            parts.append(format_rate(self.rate_mbps))
        if self.loss is not None:
            parts.append(f"loss {self.loss:g}")
        if not wan_only:
            if self.cc is not None:
                parts.append(self.cc)
            if self.time_scale != 1.0:
                parts.append(f"time x{self.time_scale:g}")
            if self.backend != "auto":
                parts.append(self.backend)
        return " ".join(parts) or "as specified"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sweep:
    """Values of each axis; the points are their cartesian product."""

    distance_km: tuple[float | None, ...] = (None,)
    delay_scale: tuple[float | None, ...] = (None,)
    rate_mbps: tuple[float | None, ...] = (None,)
    loss: tuple[float | None, ...] = (None,)
    cc: tuple[str | None, ...] = (None,)
    time_scale: tuple[float, ...] = (1.0,)
    backend: tuple[str, ...] = ("auto",)

    def points(self) -> list[SweepPoint]:
        axes = [getattr(self, f.name) for f in dataclasses.fields(self)]
        names = [f.name for f in dataclasses.fields(self)]
        return [SweepPoint(**dict(zip(names, combo, strict=True))) for combo in itertools.product(*axes)]


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file."""

    name: str
    description: str
    source: str  # file path
    topology: str  # preset name or resolved file path
    overrides: Mapping[str, Any]
    placements: tuple[Placement, ...]
    workloads: tuple[WorkloadSpec, ...]
    tenants: tuple[Tenants, ...]
    sweep: Sweep
    repetitions: int
    seed: int
    model_only: bool
    raw: Mapping[str, Any] = field(compare=False, default_factory=dict)
    #: Timed link events applied during every point on a WAN placement (corridor.spec.faults).
    faults: tuple[FaultEvent, ...] = ()
    #: Scale-model emulation (corridor.planning.scale): None (full scale), a factor s >= 1, or "auto"
    #: (fit every WAN link).
    scale: float | str | None = None

    def workload(self, name: str) -> WorkloadSpec:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)

    def placement(self, name: str) -> Placement:
        for p in self.placements:
            if p.name == name:
                return p
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """The full resolved spec, JSON-able, for the run manifest."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "topology": self.topology,
            "overrides": dict(self.overrides),
            "placements": [dataclasses.asdict(p) for p in self.placements],
            "workloads": [
                {
                    "name": w.name,
                    "type": w.type,
                    "kind": w.kind,
                    "params": dict(w.raw_params),
                    "resolved_params": _jsonable(w.params),
                    "slo": dataclasses.asdict(w.slo),
                    "timeout_s": w.timeout_s,
                    "max_ranks": w.max_ranks,
                    "placements": list(w.placements) if w.placements is not None else None,
                }
                for w in self.workloads
            ],
            "tenants": [dataclasses.asdict(t) for t in self.tenants],
            "sweep": dataclasses.asdict(self.sweep),
            "repetitions": self.repetitions,
            "seed": self.seed,
            "model_only": self.model_only,
            "raw": _jsonable(self.raw),
            # only when present, so the manifests (and content hashes) of runs without faults stay as they were
            **({"faults": [f.as_dict() for f in self.faults]} if self.faults else {}),
            # likewise only when given: "auto" or the factor (the resolved factor is in each plan's meta)
            **({"scale": self.scale} if self.scale is not None else {}),
        }


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# -- workload kinds ---------------------------------------------------------------


def pattern_kinds() -> dict[str, str]:
    """Pattern name -> workload kind, over every registered kind."""
    return registry.pattern_kinds()


# -- loading ---------------------------------------------------------------------


def default_experiment_path() -> str:
    """The built-in default experiment, ``experiments/quickstart.yaml`` in this checkout."""
    return os.path.join(CHECKOUT_ROOT, "experiments", "quickstart.yaml")


def resolve_experiment_path(name_or_path: str | None) -> str:
    """``None`` -> quickstart; a bare name -> ``experiments/NAME.yaml``; otherwise the path itself."""
    if name_or_path is None:
        return default_experiment_path()
    if os.path.exists(name_or_path):
        return name_or_path
    candidate = os.path.join(os.path.dirname(default_experiment_path()), name_or_path)
    for path in (candidate, candidate + ".yaml"):
        if os.path.exists(path):
            return path
    raise SpecError(
        f"no experiment file {name_or_path!r}; give a path or one of: {', '.join(list_experiments()) or 'none'}"
    )


def list_experiments() -> list[str]:
    folder = os.path.dirname(default_experiment_path())
    if not os.path.isdir(folder):
        return []
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml"))


def load_experiment(name_or_path: str | None = None) -> Experiment:
    """Read and validate an experiment file (``None``: the built-in quickstart)."""
    from corridor.spec.yamlio import load_yaml

    path = resolve_experiment_path(name_or_path)
    data = load_yaml(path)  # bounded size and alias expansion, no duplicate keys; errors name the file
    return parse_experiment(data, path=path)


def parse_experiment(data: Any, *, path: str) -> Experiment:
    """Validate an already-parsed experiment document; ``path`` names it in errors."""
    if not isinstance(data, Mapping):
        raise SpecError("an experiment file is a mapping with keys topology, placements, workloads, ...", path=path)
    _unknown(data, _TOP_KEYS, path, "")
    name = _name(data.get("name", os.path.splitext(os.path.basename(path))[0]), path, "name")
    description = _str(data.get("description", ""), path, "description")
    topology = _str(_required(data, "topology", path, ""), path, "topology")
    if topology.endswith((".yaml", ".yml")) and not os.path.isabs(topology):
        local = os.path.join(os.path.dirname(os.path.abspath(path)), topology)
        if os.path.exists(local):
            topology = local
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise SpecError("must be a mapping of link overrides", path=path, key="overrides")
    _unknown(overrides, _OVERRIDE_KEYS, path, "overrides")
    model_only = data.get("model_only", False)
    if not isinstance(model_only, bool):
        raise SpecError("must be true or false", path=path, key="model_only")
    placements = _placements(data.get("placements"), path)
    _check_placement_sites(placements, topology, path)
    _check_overrides(overrides, topology, path)
    workloads = _workloads(data.get("workloads"), path, model_only=model_only, placements=placements)
    tenants = _tenants(data.get("tenants") or [], path, workloads)
    sweep = _sweep(data.get("sweep") or {}, path)
    repetitions = _int(data.get("repetitions", 1), path, "repetitions", 1, 1000)
    seed = _int(data.get("seed", 1), path, "seed", 0, 2**31 - 1)
    faults = parse_faults(data.get("faults"), path=path)
    return Experiment(
        name=name,
        description=description,
        source=path,
        topology=topology,
        overrides=dict(overrides),
        placements=placements,
        workloads=workloads,
        tenants=tenants,
        sweep=sweep,
        repetitions=repetitions,
        seed=seed,
        model_only=model_only,
        raw=dict(data),
        faults=faults,
        scale=_scale(data.get("scale"), path),
    )


#: Largest scale factor accepted: 1 Tbit/s down to 1 Mbit/s.
MAX_SCALE = 1e6


def _scale(value: Any, path: str) -> float | str | None:
    """The ``scale`` key: absent, ``auto`` or a factor from 1 to :data:`MAX_SCALE` (every rate and size / s)."""
    if value is None:
        return None
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1.0 <= float(value) <= MAX_SCALE:
        raise SpecError(f"must be auto or a number from 1 to {MAX_SCALE:g} (every rate and size is divided by it), "
                        f"got {value!r}", path=path, key="scale")
    return float(value)


def _placements(value: Any, path: str) -> tuple[Placement, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError("must be a non-empty list of placements (the 'local' baseline plus others)",
                        path=path, key="placements")
    out: list[Placement] = []
    for i, item in enumerate(value):
        where = f"placements[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError("must be a mapping with name, servers, clients, ranks", path=path, key=where)
        _unknown(item, _PLACEMENT_KEYS, path, where)
        name = _name(_required(item, "name", path, where), path, f"{where}.name")
        topology = item.get("topology")
        if topology is not None:
            topology = _str(topology, path, f"{where}.topology")
        if name == LOCAL_PLACEMENT and topology is None:
            topology = LOCAL_TOPOLOGY
        if topology == LOCAL_TOPOLOGY:
            local_sites = ("local",)
            servers = _sites(item.get("servers", list(local_sites)), path, f"{where}.servers")
            clients = _sites(item.get("clients", list(local_sites)), path, f"{where}.clients")
        else:
            servers = _sites(_required(item, "servers", path, where), path, f"{where}.servers")
            clients = _sites(_required(item, "clients", path, where), path, f"{where}.clients")
        ranks = _sites(item.get("ranks", list(servers)), path, f"{where}.ranks")
        roles_raw = item.get("roles") or {}
        if not isinstance(roles_raw, Mapping):
            raise SpecError("must map role names (e.g. prefill, decode) to lists of sites", path=path,
                            key=f"{where}.roles")
        for role in roles_raw:
            _name(role, path, f"{where}.roles")
        roles = tuple(
            (str(role), _sites(sites, path, f"{where}.roles.{role}")) for role, sites in sorted(roles_raw.items())
        )
        for role, _ in roles:
            if role in ("servers", "clients"):
                raise SpecError("servers and clients are set at the placement level, not under roles",
                                path=path, key=f"{where}.roles.{role}")
        if any(p.name == name for p in out):
            raise SpecError(f"placement name {name!r} is used twice", path=path, key=f"{where}.name")
        out.append(Placement(name=name, topology=topology, servers=servers, clients=clients, ranks=ranks,
                             roles=roles))
    if not any(p.is_local for p in out):
        raise SpecError(
            "needs the 'local' baseline placement (add '- name: local'; it uses the one-site 'local' topology)",
            path=path, key="placements",
        )
    if len(out) < 2:
        raise SpecError("needs at least one placement besides the 'local' baseline", path=path, key="placements")
    return tuple(out)


def _check_overrides(overrides: Mapping[str, Any], topology: str, path: str) -> None:
    """Apply the overrides to the topology now, so a bad one fails at load naming this file, not at the first plan."""
    if not overrides:
        return
    from corridor.spec.topospec import load_topology, override_links

    spec = load_topology(topology)
    for key, value in overrides.items():
        try:
            override_links(spec, **{key: value})
        except SpecError as exc:
            raise SpecError(exc.bare_message, path=path, key=f"overrides.{key}") from None
        except TypeError:
            raise SpecError("is not a link override", path=path, key=f"overrides.{key}") from None


def _check_placement_sites(placements: Sequence[Placement], topology: str, path: str) -> None:
    """Every site a placement names must be a site of its topology (loaded here, so errors come at load)."""
    from corridor.spec.topospec import load_topology

    sites_of: dict[str, tuple[str, tuple[str, ...]]] = {}
    for i, placement in enumerate(placements):
        where = placement.topology or topology
        if where.endswith((".yaml", ".yml")) and not os.path.isabs(where):
            local = os.path.join(os.path.dirname(os.path.abspath(path)), where)
            where = local if os.path.exists(local) else where
        if where not in sites_of:
            spec = load_topology(where)
            sites_of[where] = (spec.name, tuple(sorted(site.name for site in spec.sites)))
        name, allowed = sites_of[where]
        lists = [("servers", placement.servers), ("clients", placement.clients), ("ranks", placement.ranks),
                 *((f"roles.{role}", sites) for role, sites in placement.roles)]
        for key, sites in lists:
            unknown = [site for site in sites if site not in allowed]
            if unknown:
                raise SpecError(
                    f"no site {', '.join(map(repr, unknown))} in topology {name}; its sites: {', '.join(allowed)}",
                    path=path, key=f"placements[{i}].{key}",
                )


def _workloads(value: Any, path: str, *, model_only: bool, placements: Sequence[Placement]
               ) -> tuple[WorkloadSpec, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError("must be a non-empty list of workloads", path=path, key="workloads")
    kinds = pattern_kinds()
    out: list[WorkloadSpec] = []
    for i, item in enumerate(value):
        where = f"workloads[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError("must be a mapping with name, type, params, slo", path=path, key=where)
        _unknown(item, _WORKLOAD_KEYS, path, where)
        name = _name(_required(item, "name", path, where), path, f"{where}.name")
        wtype = _str(_required(item, "type", path, where), path, f"{where}.type")
        if wtype not in kinds:
            raise SpecError(f"unknown workload type {wtype!r}; allowed: {', '.join(sorted(kinds)) or 'none'}",
                            path=path, key=f"{where}.type")
        kind = kinds[wtype]
        raw_params = item.get("params") or {}
        if not isinstance(raw_params, Mapping):
            raise SpecError("must be a mapping of workload parameters", path=path, key=f"{where}.params")
        merged = {**raw_params, "pattern": wtype}
        params = registry.get(kind).validate(merged, where=f"{path}: {where}.params")
        slo = _slo(item.get("slo") or {}, kind, path, f"{where}.slo")
        timeout_s = _duration_s(item.get("timeout", "120s"), path, f"{where}.timeout", 1.0, MAX_TIMEOUT_S)
        max_ranks = item.get("max_ranks")
        if max_ranks is not None:
            max_ranks = _int(max_ranks, path, f"{where}.max_ranks", 1, 10_000_000)
        only = item.get("placements")
        if only is not None:
            only = _sites(only, path, f"{where}.placements")
            names = [p.name for p in placements]
            for j, pname in enumerate(only):
                if pname not in names:
                    raise SpecError(f"no placement named {pname!r}; allowed: {', '.join(names)}", path=path,
                                    key=f"{where}.placements[{j}]")
        if any(w.name == name for w in out):
            raise SpecError(f"workload name {name!r} is used twice", path=path, key=f"{where}.name")
        out.append(WorkloadSpec(name=name, type=wtype, kind=kind, raw_params=dict(raw_params), params=params,
                                slo=slo, timeout_s=timeout_s, max_ranks=max_ranks, placements=only))
    return tuple(out)


def _slo(value: Any, kind: str, path: str, where: str) -> Any:
    if isinstance(value, str):
        value = _slo_preset(value, kind, path, where)
    if not isinstance(value, Mapping):
        raise SpecError("must be a mapping of thresholds or the name of an SLO preset", path=path, key=where)
    return registry.get(kind).parse_slo(value, path=path, where=where)


def _slo_preset(name: str, kind: str, path: str, where: str) -> dict[str, Any]:
    """A named SLO (corridor.spec.slo_presets) as the thresholds mapping the kind's parser reads."""
    if name not in SLO_PRESETS:
        raise SpecError(f"unknown SLO preset {name!r}; allowed: {', '.join(SLO_PRESETS)} "
                        "(or give a mapping of thresholds)", path=path, key=where)
    if kind != "inference":
        raise SpecError(f"SLO preset {name!r} is a serving latency SLO; a {kind} workload needs a mapping of "
                        "thresholds", path=path, key=where)
    preset = SLO_PRESETS[name]
    return {"ttft": f"{preset.ttft_ms:g}ms", "tpot": f"{preset.tpot_ms:g}ms", "percentile": preset.percentile}


def _tenants(value: Any, path: str, workloads: Sequence[WorkloadSpec]) -> tuple[Tenants, ...]:
    if not isinstance(value, list):
        raise SpecError("must be a list of groups of workloads that share the corridor", path=path, key="tenants")
    names = [w.name for w in workloads]
    out: list[Tenants] = []
    for i, item in enumerate(value):
        where = f"tenants[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError("must be a mapping with name, workloads, victim", path=path, key=where)
        _unknown(item, _TENANT_KEYS, path, where)
        name = _name(_required(item, "name", path, where), path, f"{where}.name")
        members = item.get("workloads")
        if not isinstance(members, list) or len(members) < 2:
            raise SpecError("must list at least two workload names", path=path, key=f"{where}.workloads")
        for j, member in enumerate(members):
            if member not in names:
                raise SpecError(f"no workload named {member!r}; allowed: {', '.join(names)}", path=path,
                                key=f"{where}.workloads[{j}]")
        if len(set(members)) != len(members):
            raise SpecError("names a workload twice", path=path, key=f"{where}.workloads")
        victim = item.get("victim", members[0])
        if victim not in members:
            raise SpecError(f"must be one of the group's workloads: {', '.join(members)}", path=path,
                            key=f"{where}.victim")
        if name in names or any(t.name == name for t in out):
            raise SpecError(f"name {name!r} is already used by a workload or tenant group", path=path,
                            key=f"{where}.name")
        out.append(Tenants(name=name, workloads=tuple(members), victim=victim))
    return tuple(out)


def _sweep(value: Any, path: str) -> Sweep:
    if not isinstance(value, Mapping):
        raise SpecError(f"must be a mapping of axes: {', '.join(SWEEP_KEYS)}", path=path, key="sweep")
    _unknown(value, set(SWEEP_KEYS), path, "sweep")
    if "distance" in value and "delay_scale" in value:
        raise SpecError("sweep either distance or delay_scale, not both (both set the WAN delay)", path=path,
                        key="sweep")
    kwargs: dict[str, tuple[Any, ...]] = {}
    for key, attr in SWEEP_KEYS.items():
        if key not in value:
            continue
        raw = value[key]
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise SpecError("must list at least one value", path=path, key=f"sweep.{key}")
        parsed: list[Any] = []
        for j, item in enumerate(items):
            where = f"sweep.{key}[{j}]"
            if key == "distance":
                parsed.append(_unit(parse_distance_km, item, path, where, 0.0, 40_000.0))
            elif key == "delay_scale":
                parsed.append(_float(item, path, where, 0.0, 1000.0))
            elif key == "rate":
                parsed.append(_unit(parse_rate_mbps, item, path, where, 0.001, 1e9))
            elif key == "loss":
                parsed.append(_unit(parse_fraction, item, path, where, 0.0, 0.5))
            elif key == "time_scale":
                parsed.append(_float(item, path, where, 0.01, 1000.0))
            elif key == "cc":
                parsed.append(_choice(item, CONGESTION_CONTROLS, path, where))
            else:
                parsed.append(_choice(item, BACKENDS, path, where))
        if len(set(parsed)) != len(parsed):
            raise SpecError("lists a value twice", path=path, key=f"sweep.{key}")
        kwargs[attr] = tuple(parsed)
    return Sweep(**kwargs)


# -- small validators ----------------------------------------------------------


def _unknown(data: Mapping[str, Any], allowed: set[str], path: str, where: str) -> None:
    check_keys(data, allowed, path=path, where=where)


def _required(data: Mapping[str, Any], key: str, path: str, where: str) -> Any:
    if key not in data or data[key] is None:
        raise SpecError("is required", path=path, key=f"{where}.{key}" if where else key)
    return data[key]


def _name(value: Any, path: str, key: str) -> str:
    """An experiment, placement, workload, tenant or role name: it ends up in paths and point ids."""
    if not isinstance(value, str) or not SAFE_NAME_RE.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise SpecError(
            f"{shown} is not a safe name: use 1-64 letters, digits, '-', '_', '.' or '+', starting with a "
            "letter or digit (names become run-directory paths and point ids)", path=path, key=key,
        )
    return value


def _str(value: Any, path: str, key: str) -> str:
    if not isinstance(value, str) or (key.endswith("name") and not value.strip()):
        raise SpecError(f"must be a non-empty string, got {value!r}", path=path, key=key)
    return value


def _sites(value: Any, path: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
        raise SpecError(f"must be a site name or a non-empty list of site names, got {value!r}", path=path, key=key)
    return tuple(items)


def _int(value: Any, path: str, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"must be a whole number from {low} to {high}, got {value!r}", path=path, key=key)
    return value


def _float(value: Any, path: str, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise SpecError(f"must be a number from {low:g} to {high:g}, got {value!r}", path=path, key=key)
    return float(value)


def _choice(value: Any, allowed: Sequence[str], path: str, key: str) -> str:
    return check_choice(value, allowed, path=path, key=key)


def _unit(parse: Any, value: Any, path: str, key: str, low: float, high: float) -> float:
    return check_quantity(parse, value, path=path, key=key, low=low, high=high)


def _duration_ms(value: Any, path: str, key: str, low: float, high: float) -> float:
    return _unit(parse_duration_ms, value, path, key, low, high)


def _duration_s(value: Any, path: str, key: str, low: float, high: float) -> float:
    seconds = _unit(parse_duration_ms, value, path, key, 0.0, math.inf) / 1e3
    if not low <= seconds <= high:
        hours = f" ({high / 3600:g}h)" if high >= 3600 else ""
        raise SpecError(f"must be from {low:g}s to {high:g}s{hours}, got {value!r}", path=path, key=key)
    return seconds
