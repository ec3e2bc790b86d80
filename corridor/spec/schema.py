"""JSON Schemas (draft 2020-12) for topology and experiment files, for editors and other tools.

Stage: spec (pure). The schemas are built from the loaders' own tables of
allowed keys (:mod:`corridor.spec.topospec`, :mod:`corridor.spec.experiment`,
:mod:`corridor.spec.faults`) and from the registered workload kinds
(:mod:`corridor.workloads.registry`), so a key the loader accepts is a key the
schema knows. They check structure: which keys exist where, which are
required, names, choices and value types. Ranges and units stay with the
loaders, which remain the authority (``corridor topo show FILE`` and
``corridor predict FILE`` say what is wrong and how to fix it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from corridor.geography import fibre, geo
from corridor.spec import experiment, faults, topospec
from corridor.spec.slo_presets import SLO_PRESETS
from corridor.workloads import registry

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_KINDS = ("topology", "experiment")

#: A quantity with its unit ("25ms", "1Gbit", "6MB", "1e-5", "0.1%") or a plain number where the loader takes one.
_QUANTITY: dict[str, Any] = {"type": ["string", "number"]}
_TEXT: dict[str, Any] = {"type": "string"}
_NAMES: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


def _object(keys: Iterable[str], *, required: Iterable[str] = (), description: str = "",
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A closed object: ``keys`` (quantities unless ``overrides`` says otherwise), nothing else."""
    overrides = overrides or {}
    out: dict[str, Any] = {
        "type": "object",
        "properties": {key: overrides.get(key, _QUANTITY) for key in sorted(keys)},
        "additionalProperties": False,
    }
    if required:
        out["required"] = sorted(required)
    if description:
        out["description"] = description
    return out


def _name(pattern: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{pattern}$"}


def topology_schema() -> dict[str, Any]:
    """The schema of a topology file (docs/topologies.md)."""
    burst = _object(topospec.BURST_KEYS, required=topospec.BURST_KEYS[:2],
                    description="Gilbert-Elliott bursty loss")
    direction = {"burst_loss": burst}
    fibres = {"enum": sorted(fibre.FIBRES)}
    fabric = _object(topospec.FABRIC_KEYS, description="each host's link to its site switch")
    hosts = _object(topospec.ROLES, overrides={role: {"type": "integer", "minimum": 0} for role in topospec.ROLES},
                    description="role: number of hosts")
    site = _object(topospec.SITE_KEYS, overrides={
        "code": _name(topospec.CODE_RE.pattern), "kind": {"enum": list(geo.KINDS)}, "hosts": hosts,
        "place": _TEXT, "lat": {"type": "number"}, "lon": {"type": "number"}, "label": _TEXT, "fabric": fabric,
    })
    place = _object(topospec.PLACE_KEYS, required=("lat", "lon"),
                    overrides={"lat": {"type": "number"}, "lon": {"type": "number"}, "label": _TEXT})
    link = _object(topospec.LINK_KEYS, required=("between",), overrides={
        **direction,
        "between": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "name": _name(topospec.NAME_RE.pattern),
        "route": _NAMES,
        "fibre": fibres,
        "layer": {"enum": sorted(fibre.LAYERS)},
        "reverse": _object(topospec.REVERSE_KEYS, overrides=direction, description="b->a values where they differ"),
    })
    return {
        "$schema": DRAFT,
        "$id": "https://corridor.invalid/schema/topology.json",
        "title": "corridor topology",
        **_object(topospec.TOP_KEYS, required=("sites",), overrides={
            "name": _name(topospec.NAME_RE.pattern),
            "description": _TEXT,
            "model": _object(topospec.MODEL_KEYS, overrides={"fibre": fibres}),
            "fabric": fabric,
            "defaults": _object(topospec.DEFAULT_KEYS, overrides={**direction, "fibre": fibres}),
            "places": {"type": "object", "additionalProperties": place,
                       "propertyNames": _name(topospec.NAME_RE.pattern)},
            "sites": {"type": "object", "minProperties": 1, "propertyNames": _name(topospec.NAME_RE.pattern),
                      "additionalProperties": {"oneOf": [{"type": "null"}, site]}},
            "links": {"type": "array", "items": link},
        }),
    }


def _kind_keys() -> dict[str, tuple[set[str] | None, set[str]]]:
    """Registered kind -> (parameter keys or None when not known here, SLO keys): the loaders' own sets."""
    from corridor.workloads import bulk
    from corridor.workloads.inference import kind as inference_kind
    from corridor.workloads.inference import run as inference
    from corridor.workloads.training import kind as training_kind
    from corridor.workloads.training import run as training
    inference_params = {f.name for f in dataclasses.fields(inference.InferenceParams) if f.name != "kv_scale"}
    known: dict[str, tuple[set[str] | None, set[str]]] = {
        "training": (set(training._KEYS), set(training_kind._SLO_KEYS)),
        "inference": (inference_params, set(inference_kind._SLO_KEYS)),
        "bulk": (set(bulk._PARAM_KEYS), {"deadline", "marginal_fraction"}),
    }
    # A kind registered elsewhere still gets its types; its keys are left to its loader.
    return {name: known.get(name, (None, set())) for name in registry.KINDS}


def experiment_schema() -> dict[str, Any]:
    """The schema of an experiment file (docs/experiments.md)."""
    patterns = registry.pattern_kinds()
    kinds = _kind_keys()
    per_type: list[dict[str, Any]] = []
    for kind, (param_keys, slo_keys) in kinds.items():
        types = sorted(p for p, k in patterns.items() if k == kind)
        if not types:
            continue
        then: dict[str, Any] = {"properties": {}}
        if param_keys is not None:
            then["properties"]["params"] = _object(param_keys)
        if slo_keys:
            slo_object = _object(slo_keys)
            then["properties"]["slo"] = ({"oneOf": [slo_object, {"enum": sorted(SLO_PRESETS)}]}
                                         if kind == "inference" else slo_object)
        per_type.append({"if": {"properties": {"type": {"enum": types}}, "required": ["type"]}, "then": then})
    workload = _object(experiment._WORKLOAD_KEYS, required=("name", "type"), overrides={
        "name": _name(experiment.SAFE_NAME_RE.pattern),
        "type": {"enum": sorted(patterns)},
        "params": {"type": "object"},
        "slo": {"oneOf": [{"type": "object"}, {"enum": sorted(SLO_PRESETS)}]},
        "timeout": _QUANTITY,
        "max_ranks": {"type": "integer", "minimum": 1},
        "placements": _NAMES,
        "description": _TEXT,
    })
    workload["allOf"] = per_type
    placement = _object(experiment._PLACEMENT_KEYS, required=("name",), overrides={
        "name": _name(experiment.SAFE_NAME_RE.pattern), "topology": _TEXT, "servers": _NAMES, "clients": _NAMES,
        "ranks": _NAMES, "roles": {"type": "object", "additionalProperties": _NAMES}, "description": _TEXT,
    })
    tenant = _object(experiment._TENANT_KEYS, required=("name", "workloads"), overrides={
        "name": _name(experiment.SAFE_NAME_RE.pattern), "workloads": _NAMES, "victim": _TEXT, "description": _TEXT,
    })
    axis_value: dict[str, Any] = {"type": ["string", "number", "null"]}
    sweep_axis = {"oneOf": [axis_value, {"type": "array", "items": axis_value, "minItems": 1}]}
    fault = _object(faults._KEYS, required=("event", "at"), overrides={
        "link": {"type": ["string", "null"]}, "event": {"enum": sorted(faults._KIND_KEYS)}, "description": _TEXT,
    })
    return {
        "$schema": DRAFT,
        "$id": "https://corridor.invalid/schema/experiment.json",
        "title": "corridor experiment",
        **_object(experiment._TOP_KEYS, required=("topology",), overrides={
            "name": _name(experiment.SAFE_NAME_RE.pattern),
            "description": _TEXT,
            "topology": _TEXT,
            "overrides": _object(experiment._OVERRIDE_KEYS, overrides={"links": _NAMES}),
            "placements": {"type": "array", "items": placement},
            "workloads": {"type": "array", "items": workload, "minItems": 1},
            "tenants": {"type": "array", "items": tenant},
            "sweep": _object(experiment.SWEEP_KEYS, overrides=dict.fromkeys(experiment.SWEEP_KEYS, sweep_axis)),
            "repetitions": {"type": "integer", "minimum": 1},
            "seed": {"type": "integer"},
            "model_only": {"type": "boolean"},
            "faults": {"type": "array", "items": fault},
            "scale": {"oneOf": [{"type": "number", "minimum": 1}, {"const": "auto"}, {"type": "null"}]},
        }),
    }


def schema_for(kind: str) -> dict[str, Any]:
    """``topology`` or ``experiment`` -> its schema."""
    return {"topology": topology_schema, "experiment": experiment_schema}[kind]()
