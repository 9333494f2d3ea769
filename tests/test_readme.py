"""The README stays true: its configuration table to the settings, and every command in
its bash blocks to the CLI, the scripts, the tools and the API routes it names."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer.main

from retail.cli import app as cli_app
from retail.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
NOT_SETTINGS = {"RETAIL_TEST_POSTGRES_URL"}


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = set(re.findall(r"^\| `(RETAIL_[A-Z0-9_]+)` \|", README, flags=re.MULTILINE))
    expected = {f"RETAIL_{name.upper()}" for name in Settings.model_fields}
    assert rows == expected


def test_every_variable_the_readme_mentions_exists() -> None:
    mentioned = set(re.findall(r"\bRETAIL_[A-Z0-9_]+\b", README)) - NOT_SETTINGS
    known = {f"RETAIL_{name.upper()}" for name in Settings.model_fields}
    assert mentioned <= known, mentioned - known


# --- every command in the README's bash blocks is parsed (and some run) -----------------

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHELL_WORDS = {"for", "do", "done", "then", "fi", "if"}
# Commands of the system the README uses as they are; their own flags are theirs.
SYSTEM_COMMANDS = {
    *("curl", "jq", "grep", "createdb", "psql", "rm", "mkdir", "cp", "apt-get", "pip", "python3"),
    "sleep",
}
CONTAINERS = {"docker"}
LOAD_TOOLS = {"wrk", "hey"}
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
METHODS = {"get", "post", "put", "delete", "patch"}


def bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def command_lines(block: str) -> list[str]:
    """Logical lines (continuations joined) without comments."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        lines.append(re.split(r"\s{2,}#\s", stripped)[0].strip())
    return lines


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of a line: split at `&&`, `;`, `|` and inside `$(…)`."""
    inner = re.findall(r"\$\((.*)\)", line)
    outer = re.sub(r"\$\((.*)\)", "SUBST", line)
    found = []
    for text in [outer, *inner]:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in lexer:
            if token in (";", "&&", "|", "||", "&"):
                found.append(words)
                words = []
            else:
                words.append(token)
        found.append(words)
    commands = []
    for words in found:
        while words and (ASSIGNMENT.match(words[0]) or words[0] in SHELL_WORDS):
            if words[0] == "for":  # for NAME in WORDS
                words = []
                break
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def all_commands() -> list[list[str]]:
    return [
        words
        for block in bash_blocks()
        for line in command_lines(block)
        for words in simple_commands(line)
    ]


def parse_retail(args: list[str]) -> None:
    """Parse `retail ARGS` as the CLI would, without running it: unknown commands and
    options, and bad values, raise click's usage errors."""
    command: Any = typer.main.get_command(cli_app)
    try:
        context = command.make_context("retail", list(args), resilient_parsing=False)
        while hasattr(command, "resolve_command"):  # a group: on to its subcommand
            rest = [*context._protected_args, *context.args]
            name, sub, rest = command.resolve_command(context, rest)
            assert sub is not None and name is not None
            command, context = sub, sub.make_context(name, rest, parent=context)
    except Exception as error:
        if not hasattr(error, "format_message"):  # not a usage error of the CLI
            raise
        raise UsageProblem(f"retail {shlex.join(args)}: {error.format_message()}") from None


class UsageProblem(AssertionError):
    """A README command the CLI would refuse."""


def help_of(program: list[str]) -> str:
    result = subprocess.run(
        [*program, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, (program, result.stderr)
    return result.stdout + result.stderr


def flags(words: list[str]) -> list[str]:
    return [w.split("=", 1)[0] for w in words if w.startswith("--")]


def openapi_routes() -> set[tuple[str, str]]:
    from retail.web.app import create_app

    schema = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]
    return {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path))
        for path, operations in schema["paths"].items()
        for method in operations
        if method in METHODS
    }


def curl_route(words: list[str]) -> tuple[str, str] | None:
    """(METHOD, templated path) of a curl command line to the service."""
    urls = [w for w in words if re.match(r"^(https?://)?(localhost|127\.0\.0\.1):8000", w)]
    if not urls:
        return None
    method = "GET"
    if "-X" in words:
        method = words[words.index("-X") + 1]
    elif "-d" in words:
        method = "POST"
    path = re.sub(r"^(https?://)?[^/]+", "", urls[0]).split("?")[0] or "/"
    segments = [
        "{}" if re.fullmatch(r"\$\w+|[0-9a-f-]{36}|[A-Z]+-\d+", part) else part
        for part in path.split("/")
    ]
    return method, "/".join(segments)


def test_the_readme_has_commands_to_check() -> None:
    commands = all_commands()
    assert len(commands) > 40
    assert any(words[:3] == ["uv", "run", "retail"] for words in commands)


def test_every_retail_command_in_the_readme_parses() -> None:
    checked = 0
    for words in all_commands():
        if words[:3] == ["uv", "run", "retail"]:
            parse_retail(words[3:])
            checked += 1
    assert checked >= 15


def test_a_flag_that_does_not_exist_fails_the_check() -> None:
    with pytest.raises(UsageProblem, match="No such option: --idempotency-key"):
        parse_retail(["load", "--idempotency-key"])
    with pytest.raises(UsageProblem, match="--force"):
        parse_retail(["db", "reset", "--force"])
    with pytest.raises(UsageProblem, match="reject"):
        parse_retail(["serve", "--overload-mode", "rejected"])
    with pytest.raises(UsageProblem):
        parse_retail(["db", "rest"])


def test_every_other_uv_run_command_names_real_flags() -> None:
    helps: dict[tuple[str, ...], str] = {}
    for words in all_commands():
        if words[:2] != ["uv", "run"] or words[2] == "retail":
            continue
        rest = words[2:]
        if rest[0] == "--with":  # a tool fetched for one command (Locust)
            assert rest[1] == "locust" and rest[2] == "locust"
            script = rest[rest.index("-f") + 1]
            assert (ROOT / script).is_file(), script
            continue
        if rest[0] == "python" and rest[1].endswith(".py"):
            program: tuple[str, ...] = (sys.executable, rest[1])
        elif rest[0] == "python" and rest[1] == "-m":
            if rest[2] == "websockets":  # an interactive client: that it is installed
                __import__("websockets")
                continue
            subcommand = [w for w in rest[3:4] if not w.startswith("-")]
            program = (sys.executable, "-m", rest[2], *subcommand)
        else:
            tool = VENV_BIN / rest[0]
            assert tool.exists(), f"{rest[0]} is not installed by uv sync"
            subcommand = [w for w in rest[1:2] if w in ("dev", "run", "upgrade")]
            program = (str(tool), *subcommand)
        if program not in helps:
            helps[program] = help_of(list(program))
        for flag in flags(rest):
            assert flag in helps[program], f"{' '.join(words)}: {flag} is not an option"
    assert helps


def test_every_curl_command_calls_a_documented_route() -> None:
    routes = openapi_routes() | {("GET", "/metrics"), ("GET", "/")}
    checked = 0
    for words in all_commands():
        if words[0] != "curl":
            continue
        route = curl_route(words)
        if route is None:
            continue
        assert route in routes, f"{' '.join(words)}: {route} is not an API route"
        checked += 1
    assert checked >= 15


def test_every_command_is_one_the_readme_check_knows() -> None:
    for words in all_commands():
        program = words[0]
        if program == "uv" or program in SYSTEM_COMMANDS or program in LOAD_TOOLS:
            continue
        if program in CONTAINERS:
            assert words[1] == "compose", words
            if "--profile" in words:
                profile = words[words.index("--profile") + 1]
                assert f"profiles: [{profile}]" in (ROOT / "docker-compose.yml").read_text()
            continue
        if program == "chromium":
            assert "--virtual-time-budget=3000" in words and "--headless" in words
            continue
        raise AssertionError(f"the README runs {program!r}: teach this test to check it")


def test_files_the_commands_name_exist() -> None:
    for words in all_commands():
        for word in words:
            if re.match(r"^(examples|docs|bench)/\S+\.\w+$", word) or word == ".env.example":
                assert (ROOT / word).exists(), word
        if words[0] == "wrk":
            assert (ROOT / words[words.index("-s") + 1]).is_file()


def test_the_screenshot_command_has_a_chromium_to_run() -> None:
    if shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    line = next(w for w in all_commands() if w[0] == "chromium")
    assert {"--headless", "--screenshot=dashboard.png"} <= set(line)


# --- the sections that need a server, run against one as written ---------------------


def section_block(heading: str) -> str:
    """The first bash block after a heading."""
    start = README.index(heading + "\n")
    return re.search(r"^```bash\n(.*?)^```", README[start:], flags=re.MULTILINE | re.DOTALL)[1]  # type: ignore[index]


def run_section(heading: str, tmp_path: Path, **extra_env: str) -> str:
    """Run a README section as a person would: `retail db reset --yes` and the `retail
    serve` line start a fresh server (on a free port instead of 8000, in an empty
    directory); every other line runs in bash against it. The shell's output."""
    from tests.serving import PYTHON, free_port, python_environment, serving

    lines = command_lines(section_block(heading))
    serve = next((line for line in lines if "uv run retail serve" in line), "uv run retail serve")
    words = shlex.split(serve)
    assignments = dict(w.split("=", 1) for w in words[: words.index("uv")])
    flags_ = words[words.index("serve") + 1 :]
    parse_retail(["serve", *flags_])
    port = free_port()
    env = {**python_environment(), **assignments, **extra_env, "RETAIL_PORT": str(port)}
    if any("retail db reset --yes" in line for line in lines):
        # the section's database starts empty: make it not empty first
        (tmp_path / "retail.db").write_bytes(b"")
        reset = subprocess.run(
            [PYTHON, "-m", "retail", "db", "reset", "--yes"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reset.returncode == 0, reset.stderr
    script = "\n".join(
        line.replace("localhost:8000", f"127.0.0.1:{port}")
        for line in lines
        if "uv run retail" not in line
    )
    command = [PYTHON, "-m", "retail", "serve", *flags_]
    log = tmp_path / "server.log"
    with serving(command, port=port, env=env, cwd=tmp_path, log=log):
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


needs_jq = pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq (apt-get install jq)")


@pytest.mark.slow
@needs_jq
def test_the_curl_walk_through_works_as_written(tmp_path: Path) -> None:
    output = run_section("## Walk-through with curl", tmp_path, RETAIL_ADMIN_TOKEN="s3cret")
    assert output.count("HTTP/1.1 202 Accepted") >= 2
    assert "HTTP/1.1 409 Conflict" in output  # cancel, once fulfilment started
    assert '"sku":"LAMP-2","name":"Floor lamp"' in output  # the admin PUT
    assert '"kind":"created"' in output  # the captured id's events


@pytest.mark.slow
@needs_jq
def test_the_queue_section_works_as_written(tmp_path: Path) -> None:
    output = run_section("### Queue", tmp_path)
    placed = re.findall(r"^(alice|bob|charlie) queued (\d+) (\S+)$", output, flags=re.MULTILINE)
    assert [name for name, _, _ in placed] == ["alice", "bob", "charlie"], output
    positions = [int(position) for _, position, _ in placed]
    starts = [datetime.fromisoformat(start) for _, _, start in placed]
    # Alice's order starts at once; a worker may not have claimed it yet when bob's or
    # charlie's comes (then alice still counts as waiting, one place ahead of them): each
    # starts 10 s after the one before, as the README says.
    assert positions[0] == 1 and positions[1] in (1, 2)
    assert positions[2] in (2, positions[1] + 1)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
    assert all(9 <= gap <= 11 for gap in gaps), (gaps, output)
    assert "HTTP/1.1 200 OK" in output and '"status":"cancelled"' in output


@pytest.mark.slow
def test_the_reject_section_works_as_written(tmp_path: Path) -> None:
    output = run_section("### Reject", tmp_path)
    assert output.splitlines()[0] == "202"
    assert "HTTP/1.1 503 Service Unavailable" in output
    assert '"type":"/problems/capacity-exceeded"' in output


@pytest.mark.slow
@needs_jq
def test_the_degrade_section_works_as_written(tmp_path: Path) -> None:
    output = run_section("### Degrade", tmp_path)
    alice, bob = (json.loads(line) for line in output.splitlines())
    assert (alice["service_level"], bob["service_level"]) == ("full", "degraded")
    assert (alice["skipped_steps"], bob["skipped_steps"]) == ([], ["fraud_check"])


@pytest.mark.slow
@needs_jq
def test_the_priorities_section_works_as_written(tmp_path: Path) -> None:
    output = run_section("### Priorities", tmp_path)
    lines = output.splitlines()
    assert lines[:4] == [
        "bob standard 202",
        "carol standard 503",
        "erin sheddable 503",
        "dave critical 202",
    ]
    assert json.loads(lines[4]) == {"customer_id": "dave", "priority": "critical"}
    assert json.loads(lines[5]) == {"critical": 0, "standard": 1, "sheddable": 1}


@pytest.mark.slow
@needs_jq
def test_the_deadlines_section_works_as_written(tmp_path: Path) -> None:
    output = run_section("### Deadlines", tmp_path)
    assert "HTTP/1.1 503 Service Unavailable" in output
    # 1 s late, or 2 s if alice had not yet taken her slot (then she is counted as waiting)
    assert re.search(r"^retry-after: [12]\r?$", output, flags=re.MULTILINE | re.IGNORECASE)
    assert '"cause":"deadline"' in output
    assert "cannot start within 1 s" in output
    events = [json.loads(e) for e in re.findall(r'\{"kind":"\w+","status":"\w+"\}', output)]
    assert events == [
        {"kind": "created", "status": "queued"},
        {"kind": "expired", "status": "expired"},
    ]
