"""Reading YAML specs safely: the one loader behind the topology and experiment files.

Stage: spec (pure). A spec file is small and written by hand, so anything
else is refused with a :class:`~corridor.errors.SpecError` naming the file:
a document over :data:`MAX_DOCUMENT_BYTES`, one whose aliases would expand to
more than :data:`MAX_NODES` nodes (the "billion laughs" pattern, which costs
nothing to parse but hangs whatever later walks the data: error messages, the
run manifest), a recursive alias, nesting deeper than Python can walk,
duplicate mapping keys (YAML would silently keep the last one), invalid
UTF-8, and anything but the safe YAML types.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from corridor.errors import SpecError

#: Largest spec file read, in bytes.
MAX_DOCUMENT_BYTES = 1 << 20
#: Most nodes (scalars, sequences, mappings) a document may hold once every alias is expanded.
MAX_NODES = 200_000


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if isinstance(key, (str, int, float, bool)):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (a YAML mapping keeps only one)", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | os.PathLike[str], *, shown: str | None = None) -> Any:
    """Read and parse the YAML file ``path``; ``shown`` is how errors name it (default: ``path``)."""
    name = shown if shown is not None else os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("no such file", path=name) from None
    except OSError as exc:
        raise SpecError(f"cannot read it: {exc.strerror or exc}", path=name) from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise SpecError(_too_big(), path=name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8",
                        path=name) from None
    return loads_yaml(text, path=name)


def loads_yaml(text: str, *, path: str = "<string>") -> Any:
    """Parse YAML text under the limits above; ``path`` names the document in errors."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise SpecError(_too_big(), path=path)
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()  # type: ignore[no-untyped-call]
        if node is None:
            return None
        _check_expanded_size(node, path)
        return loader.construct_document(node)  # type: ignore[no-untyped-call]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{where}not valid YAML: {problem}", path=path) from None
    except RecursionError:
        raise SpecError("is nested too deeply to be a spec file; flatten it", path=path) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _too_big() -> str:
    return f"is larger than {MAX_DOCUMENT_BYTES // 1024} KiB, far beyond any spec file; give the right file"


def _check_expanded_size(root: yaml.Node, path: str) -> None:
    """Refuse a document whose aliases expand past :data:`MAX_NODES` nodes, or refer to themselves.

    Aliases point at the same node object, so the expanded size of each node is
    computed once (post-order, iteratively) and reused: linear in the document,
    however large the expansion.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(size[id(child)] for child in _children(node))
            if total > MAX_NODES:
                mark = node.start_mark
                raise SpecError(
                    f"line {mark.line + 1}: its aliases expand to more than {MAX_NODES:,} nodes; a spec file "
                    "this large is a mistake or an attack (\"billion laughs\"), so it is refused", path=path
                )
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_path:
            mark = node.start_mark
            raise SpecError(f"line {mark.line + 1}: an alias refers to a node that contains it; "
                            "a spec cannot be recursive", path=path)
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
