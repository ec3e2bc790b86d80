"""The report: one self-contained HTML file, verdict table first, then evidence, then configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_experiment_fakes import run_fake, use_fakes  # noqa: F401

from corridor.results.report import write_report
from corridor.results.rundir import read_run
from corridor.results.verdict import compute_verdicts

pytestmark = pytest.mark.usefixtures("use_fakes")


@pytest.fixture
def report(tmp_path: Path) -> tuple[str, str, str]:
    run_dir = run_fake(tmp_path)
    html_path, md_path = write_report(read_run(run_dir), os.path.join(run_dir, "derived"))
    return run_dir, html_path, md_path


def test_html_is_self_contained_and_puts_the_verdicts_first(report: tuple[str, str, str]) -> None:
    run_dir, html_path, _ = report
    text = Path(html_path).read_text()
    assert html_path == os.path.join(run_dir, "derived", "report.html")
    table = text.index('id="verdict-table"')
    first_figure = text.index("<figure")
    config = text.index('id="configuration"')
    assert table < first_figure < config
    assert "<script" not in text
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing to fetch: every figure is embedded
    figures = os.listdir(os.path.join(run_dir, "derived", "figures"))
    assert text.count('src="data:image/png;base64,') == len(figures) // 2
    verdicts = compute_verdicts(read_run(run_dir))
    assert text.count('<td class="v-') == len(verdicts)
    assert "does not tolerate" in text and "vs 101 ms local" in text


def test_markdown_has_the_same_content(report: tuple[str, str, str]) -> None:
    run_dir, _, md_path = report
    text = Path(md_path).read_text()
    assert text.index("## Verdicts") < text.index("## Evidence") < text.index("## Configuration")
    assert "| workload | placement | corridor | verdict | n |" in text
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert os.path.exists(os.path.join(os.path.dirname(md_path), link))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package (apt install chromium)")
def test_html_opens_in_headless_chromium(report: tuple[str, str, str], tmp_path: Path) -> None:
    _, html_path, _ = report
    shot = tmp_path / "first-screen.png"
    argv = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900"]
    dom = subprocess.run([*argv, "--dump-dom", f"file://{html_path}"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="verdict-table"' in dom.stdout
    done = subprocess.run([*argv, f"--screenshot={shot}", f"file://{html_path}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 10_000
