"""Every command shown in README.md and docs/ runs, so the documentation cannot rot.

Convention: a fenced ``sh`` block holds commands, one per line (a heredoc counts as one
command with its body). They run in order, per file, as root, in a scratch copy of the
repository; a leading ``sudo`` is dropped and ``corridor`` / ``.venv/bin/corridor`` run
this checkout's package. A line ending in ``# exits N`` must exit N, every other line 0.
A block preceded by ``<!-- not-run: REASON -->`` or ``<!-- vm-only: REASON -->`` is not
run and must give its reason. ``scripts/setup.sh`` invocations are not re-run here:
``.ci/run`` runs the very same invocation before the tests, and a test checks that.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"<!--\s*(not-run|vm-only):\s*(.+?)\s*-->")
EXITS = re.compile(r"#\s*exits\s+(\d+)\s*$")
CHECK = re.compile(r"(^|\s|/)corridor\s+check\s")
SETUP = re.compile(r"^(sudo\s+)?bash scripts/setup\.sh(\s+--[\w-]+)*$")


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str
    expect: int


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    commands: tuple[Command, ...]
    skip_reason: str | None


def split_commands(lines: list[tuple[int, str]], doc: str) -> list[Command]:
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        number, text = lines[i]
        stripped = text.strip()
        i += 1
        if not stripped or stripped.startswith("#"):
            continue
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", stripped)
        if heredoc:
            body = [text]
            while i < len(lines) and lines[i][1].strip() != heredoc.group(1):
                body.append(lines[i][1])
                i += 1
            if i < len(lines):
                body.append(lines[i][1])
                i += 1
            commands.append(Command(doc, number, "\n".join(body), 0))
            continue
        match = EXITS.search(stripped)
        expect = int(match.group(1)) if match else 0
        commands.append(Command(doc, number, stripped, expect))
    return commands


def blocks_of(path: Path) -> list[Block]:
    doc = str(path.relative_to(REPO))
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    previous = ""
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match.group(1):
            if lines[i].strip():
                previous = lines[i]
            i += 1
            continue
        lang, start = match.group(1), i + 1
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if lang == "sh":
            skip = SKIP.search(previous)
            blocks.append(Block(doc, start, tuple(split_commands(body, doc)), skip.group(2) if skip else None))
        previous = ""
    return blocks


ALL_BLOCKS = [b for path in DOCS for b in blocks_of(path)]


#: ``corridor run`` in the docs runs its planned points once here: the default repetition budget
#: (270 s) is what makes README's quickstart take 4.5 minutes, and repetition is tested on its own
#: (tests/test_precision_rounds.py); the full-length quickstart is an acceptance run.
RUN_ONCE = "--max-repetitions 1"


def rewrite(text: str) -> str:
    """The command as this checkout runs it: no sudo, corridor from this interpreter, `run` without repetitions."""
    corridor = f"{shlex.quote(sys.executable)} -m corridor"
    out = re.sub(r"(^|&&\s*|;\s*|\|\s*)sudo\s+", r"\1", text)
    out = re.sub(r"(\bcorridor\s+run\b(?:(?!--max-repetitions|--budget)[^|;&#\n])*?)(\s*(?:#.*)?)$",
                 rf"\1 {RUN_ONCE}\2", out, flags=re.M)
    out = re.sub(r"(^|\s)\.venv/bin/python(\s)", rf"\1{shlex.quote(sys.executable)}\2", out)
    out = re.sub(r"(^|&&\s*|;\s*|\s)(\.venv/bin/)?corridor(\s|$)", rf"\1{corridor}\3", out)
    return out


def test_rewrite_runs_corridor_from_this_checkout_without_sudo_or_repetitions() -> None:
    me = f"{shlex.quote(sys.executable)} -m corridor"
    assert rewrite("sudo .venv/bin/corridor run") == f"{me} run {RUN_ONCE}"
    assert rewrite("sudo corridor run s.yaml -o r  # exits 0") == f"{me} run s.yaml -o r {RUN_ONCE}  # exits 0"
    assert rewrite("corridor run x --budget 10s") == f"{me} run x --budget 10s"  # a doc's own budget stays
    assert rewrite(".venv/bin/corridor verdicts r") == f"{me} verdicts r"


def runnable_parts(text: str) -> list[str]:
    """The command without its setup.sh invocations (.ci/run runs them; see the test below)."""
    if "<<" in text:
        return [text]
    parts = [p.strip() for p in text.split("&&")]
    kept = [p for p in parts if not SETUP.match(p)]
    return [" && ".join(kept)] if kept else []


def test_docs_have_commands() -> None:
    assert any(b.commands for b in ALL_BLOCKS), "README.md shows commands"
    for block in ALL_BLOCKS:
        if block.skip_reason is not None:
            assert len(block.skip_reason) > 10, f"{block.doc}:{block.line}: say why the block is not run"


def test_setup_invocations_are_the_ones_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    for block in ALL_BLOCKS:
        for command in block.commands:
            for part in command.text.split("&&"):
                part = part.strip()
                if SETUP.match(part):
                    flags = part.split("setup.sh", 1)[1].split()
                    assert all(flag in ci for flag in flags), f"{command.doc}:{command.line}: {part} not in .ci/run"
    assert "bash scripts/setup.sh" in ci


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "sudo .venv/bin/python -m pytest" in readme
    assert ".venv/bin/python -m pytest" in ci


def _scratch_copy(tmp: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    dest = tmp / "repo"
    for name in files:
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    if (REPO / ".venv").exists():
        (dest / ".venv").symlink_to(REPO / ".venv")
    # the compiled delay line setup.sh built (ignored by git): the commands run what a user's links run; copy2
    # keeps its mtime, so it is chosen only if it is no older than its source here
    binary = REPO / "corridor" / "links" / "native" / "corridor-delayline"
    if binary.is_file():
        shutil.copy2(binary, dest / binary.relative_to(REPO))
    return dest


DOC_FILES = sorted({b.doc for b in ALL_BLOCKS if b.commands and b.skip_reason is None})


@pytest.mark.corridor_root
@pytest.mark.corridor_slow
@pytest.mark.parametrize("doc", DOC_FILES)
def test_doc_commands_run(doc: str, tmp_path: Path) -> None:
    workdir = _scratch_copy(tmp_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(workdir)
    env["CORRIDOR_TOPOLOGIES"] = str(workdir / "topologies")
    env.setdefault("MPLBACKEND", "Agg")
    seen: set[str] = set()
    for block in (b for b in ALL_BLOCKS if b.doc == doc and b.skip_reason is None):
        for command in block.commands:
            if command.text.lstrip().startswith("mininet>"):
                raise AssertionError(f"{doc}:{command.line}: interactive lines need a not-run marker")
            for part in runnable_parts(command.text):
                # The same command twice in one file (README's main command and its tour) runs once.
                key = re.sub(r"\s+#.*$", "", part).strip() if "<<" not in part else part
                if key in seen:
                    continue
                seen.add(key)
                result = subprocess.run(["bash", "-c", rewrite(part)], cwd=workdir, env=env, capture_output=True,
                                        text=True, timeout=900, stdin=subprocess.DEVNULL)
                if result.returncode == 1 != command.expect and CHECK.search(part):
                    # exit 1 is a link out of tolerance: measured once more, as tests/test_check.py does (a
                    # full suite on a host stealing 24-28 % of the CPU read README's check 19-21 ms late)
                    print(f"{doc}:{command.line}: `{part}` exited 1; once more. It said:\n{result.stdout[-3000:]}")
                    result = subprocess.run(["bash", "-c", rewrite(part)], cwd=workdir, env=env,
                                            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
                assert result.returncode == command.expect, (
                    f"{doc}:{command.line}: `{part}` exited {result.returncode}, expected {command.expect}\n"
                    f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
                )
