"""Which program runs a userspace link: the compiled delay line, or the Python one.

Stage: emulation (pure lookups, plus the compiler run that ``scripts/setup.sh`` makes).

Both engines are one process per link with the same options, control pipe and stats
file (``corridor/links/native/delayline.c`` follows :mod:`corridor.links.delayline`
line for line, and the tests hold them to the same timing). The compiled one is the
default wherever it is built, because the Python loop spends about 0.3 CPU-seconds
per Gbit/s carried and its departures fall behind from about 5 Gbit/s on two cores;
the Python one needs no compiler and stays the reference the pure tests drive.

Choose with ``CORRIDOR_DELAYLINE_ENGINE`` (``auto``, ``native`` or ``python``);
``CORRIDOR_DELAYLINE_BIN`` names another build of the native program.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from corridor.errors import EmulationError

ENGINES = ("auto", "native", "python")
ENV_ENGINE = "CORRIDOR_DELAYLINE_ENGINE"
ENV_BINARY = "CORRIDOR_DELAYLINE_BIN"
PYTHON_MODULE = "corridor.links.delayline"
NATIVE_DIR = Path(__file__).resolve().parent / "native"
NATIVE_SOURCE = NATIVE_DIR / "delayline.c"
NATIVE_BINARY = NATIVE_DIR / "corridor-delayline"
#: How setup.sh builds the native engine (jansson reads the JSON options and control lines).
COMPILE_FLAGS = ("-O2", "-g", "-Wall", "-Wextra", "-Werror", "-std=gnu11")
LINK_LIBS = ("-ljansson", "-lm", "-lpthread")
BUILD_HINT = "install the compiler and JSON library (apt-get install gcc libjansson-dev) and run: " \
             "python -m corridor.links.engine build  (scripts/setup.sh does both)"


@dataclass(frozen=True)
class Engine:
    """The program a link runs: its name and the argv that precedes the delay line's options."""

    name: str
    argv: tuple[str, ...]
    #: Why the native engine is not the one chosen, when it is not (empty otherwise).
    note: str = ""


def native_binary() -> tuple[Path | None, str]:
    """The native program when it is usable, or None and the reason it is not."""
    override = os.environ.get(ENV_BINARY)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            return None, f"{ENV_BINARY}={override} is not an executable file"
        return path, ""
    if not NATIVE_BINARY.is_file():
        return None, f"the native delay line is not built ({NATIVE_BINARY} is missing)"
    if NATIVE_SOURCE.is_file() and NATIVE_SOURCE.stat().st_mtime > NATIVE_BINARY.stat().st_mtime:
        return None, f"the native delay line {NATIVE_BINARY} is older than its source; rebuild it"
    return NATIVE_BINARY, ""


def resolve(choice: str | None = None) -> Engine:
    """The engine for ``choice`` (default: ``$CORRIDOR_DELAYLINE_ENGINE``, else ``auto``).

    ``auto`` takes the native program when it is built and current, else Python;
    ``native`` insists, with an error naming the fix.
    """
    wanted = (choice or os.environ.get(ENV_ENGINE) or "auto").strip().lower()
    if wanted not in ENGINES:
        raise EmulationError(f"unknown delay-line engine {wanted!r} (from {ENV_ENGINE} or --engine); "
                             f"use one of {', '.join(ENGINES)}")
    python = Engine("python", (sys.executable, "-m", PYTHON_MODULE))
    if wanted == "python":
        return python
    path, why = native_binary()
    if path is not None:
        return Engine("native", (str(path),))
    if wanted == "native":
        raise EmulationError(f"{why}; {BUILD_HINT}")
    return Engine("python", python.argv, note=why)


def build(out: Path = NATIVE_BINARY, *, compiler: str | None = None) -> Path:
    """Compile the native delay line into ``out`` (atomically: a failed build leaves no file behind)."""
    cc = compiler or os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise EmulationError(f"no C compiler found; {BUILD_HINT}")
    tmp = out.with_name(f".{out.name}.build{os.getpid()}")
    argv = [cc, *COMPILE_FLAGS, "-o", str(tmp), str(NATIVE_SOURCE), *LINK_LIBS]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EmulationError(f"building the native delay line failed ({' '.join(argv)}):\n"
                                 f"{result.stderr.strip()}\n{BUILD_HINT}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m corridor.links.engine [build|which|exec ARGS...]``.

    ``build`` compiles the native engine, ``which`` says which one links run, and ``exec``
    becomes the delay line this machine would run, with ARGS (how a cluster server starts
    a link whose argv the coordinator built).
    """
    args = sys.argv[1:] if argv is None else argv
    what = args[0] if args else "which"
    try:
        if what == "exec":
            chosen = resolve()
            sys.stdout.flush()
            os.execv(chosen.argv[0], [*chosen.argv, *args[1:]])
        if what == "build":
            print(f"built {build()}")
            return 0
        if what == "which":
            engine = resolve()
            print(f"{engine.name}: {' '.join(engine.argv)}" + (f"  ({engine.note})" if engine.note else ""))
            return 0
    except (EmulationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m corridor.links.engine [build|which|exec ARGS...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
