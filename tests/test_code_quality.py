"""The code stays formatted, lint-free, strictly typed and layered: checked by the test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts() -> None:
    """Layers point down, the core is pure, the load generator stands alone, no cycles
    (the contracts are in pyproject.toml)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Time is injected: only the clock seam (and the load generator, which measures real
# servers) reads a clock or sleeps.
CLOCK_READS = re.compile(
    r"time\.(time|monotonic|perf_counter)\(|asyncio\.sleep\(|datetime\.now\(|\.time\(\)"
    r"|datetime\.utcnow\("
)
CLOCK_SEAM = {
    "retail/runtime/clock.py": "the seam itself",
    "retail/runtime/logs.py": "rate-limits log lines in real time; a log handler has no clock",
    "retail/sim/engine.py": "reports how long a simulation took on the wall",
    "retail/web/protocol.py": "the HTTP server's connection timers, on the loop's own clock",
}


def test_only_the_clock_seam_reads_the_clock() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "retail").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in CLOCK_SEAM
        and "loadgen" not in path.relative_to(ROOT).parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if CLOCK_READS.search(line)
    ]
    assert not offenders, "\n".join(offenders)
