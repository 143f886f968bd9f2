"""Docs that work verbatim: every shell block in README.md and docs/ is run here.

Each block carries a marker on the line before it:

- ``<!-- docs-test: run -->``: run with bash, as written, in the directory and with the
  files a reader would have (``CONTEXTS`` below says which, per block);
- ``<!-- docs-test: ci -->``: the README's test command, which .ci/run runs verbatim (this
  test checks that it does, instead of running the suite inside itself);
- ``<!-- docs-test: needs-aws -->``: needs a real AWS account;
- ``<!-- docs-test: once-published -->``: ``pip install lambda-conn`` from an index, the form
  once the package is published.

A block without a marker fails the test, so a new command cannot go unchecked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKERS = ("run", "ci", "needs-aws", "once-published")
SHELL = ("sh", "bash", "shell", "console")
FENCE = re.compile(r"(?:<!-- docs-test: ([\w-]+) -->\n)?```(\w*)\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    marker: str | None
    text: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(kind: tuple[str, ...] = SHELL) -> list[Block]:
    found = []
    for page in PAGES:
        source = page.read_text()
        for m in FENCE.finditer(source):
            if m[2] in kind:
                line = source[: m.start(2)].count("\n") + 1
                found.append(Block(page, line, m[1], m[3]))
    return found


def python_block(page: str, after: str) -> str:
    """The first python block after the text ``after`` (a handler the page shows)."""
    source = (ROOT / page).read_text()
    start = source.index(after)
    m = re.compile(r"```python\n(.*?)```", re.S).search(source, start)
    assert m is not None, f"no python block after {after!r} in {page}"
    return m[1]


def checkout_copy(tmp: Path) -> Path:
    """The checkout as a reader has it, without build leftovers."""
    copy = tmp / "lambda-conn"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".git", "bench-results"
        ),
    )
    return copy


def fresh_venv(tmp: Path) -> dict[str, str]:
    """PATH with a fresh venv's python3 (and what it installs) first."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}


# ---------------------------------------------------------------------- per-block context
# Where a block runs and what it needs, keyed by a line of the block. Returns (cwd, env).
Context = Callable[[Path, Any], tuple[Path, dict[str, str]]]


def _in_checkout(tmp: Path, request: Any) -> tuple[Path, dict[str, str]]:
    # `pip install -e .` from the checkout itself: idempotent for this environment.
    return ROOT, {}


def _soak_example(tmp: Path, request: Any) -> tuple[Path, dict[str, str]]:
    (tmp / "app.py").write_text(
        "import os\n\n\ndef handler(event, context):\n"
        "    return {'db': os.environ['DB_HOST'], 'event': event}\n"
    )
    (tmp / "event.json").write_text('{"id": 1}')
    return tmp, {}


def _plugin_example(tmp: Path, request: Any) -> tuple[Path, dict[str, str]]:
    (tmp / "test_app.py").write_text(
        textwrap.dedent(
            """
            def handler(event, context):
                return {"ok": True, "remaining": context.get_remaining_time_in_millis()}

            def test_handler(lambda_context):
                assert handler({"id": 1}, lambda_context)["ok"]
            """
        )
    )
    return tmp, {}


def _quick_start_install(tmp: Path, request: Any) -> tuple[Path, dict[str, str]]:
    return checkout_copy(tmp), fresh_venv(tmp)


def _quick_start_soak(tmp: Path, request: Any) -> tuple[Path, dict[str, str]]:
    # The reader's state after step 1 and 2: a checkout, a venv with lambda-conn[postgres],
    # the PostgreSQL handler saved as app.py; a PostgreSQL server they administer (here the
    # suite's private one, its superuser over the unix socket, as `sudo -u postgres` is).
    postgres = request.getfixturevalue("postgres")
    cwd, env = checkout_copy(tmp), fresh_venv(tmp)
    subprocess.run(
        ["bash", "-c", "python3 -m pip install -q '.[postgres]'"],
        cwd=cwd,
        env={**os.environ, **env},
        check=True,
    )
    (cwd / "app.py").write_text(python_block("docs/quick-start.md", "PostgreSQL ("))
    for sql in ("DROP DATABASE IF EXISTS app", "DROP ROLE IF EXISTS app"):
        postgres.query(sql)
    env.update(
        PGHOST=str(postgres.socket_dir),
        PGPORT=str(postgres.port),
        PGUSER="lc_admin",
        PGDATABASE=postgres.database,
    )
    return cwd, env


CONTEXTS: dict[str, Context] = {
    "python3 -m pip install -e '.[local]' && lambda-conn demo": _in_checkout,
    "lambda-conn demo --fanout": _in_checkout,
    "python3 -m pip install -e '.[test]' && python3 benchmarks/run.py": _in_checkout,
    "lambda-conn soak app.handler -n 2000 --memory 512": _soak_example,
    "lambda-conn soak app.handler -n 2000 --concurrency 8": _soak_example,
    "python3 -m pytest --lambda-conn ": _plugin_example,
    "python3 -m pip install '.[postgres]'": _quick_start_install,
    "python3 -m pip install build && python3 -m build": _quick_start_install,
    "python3 -m pip install '.[local]'": _quick_start_soak,
}

# What each run must show (regular expressions), beyond exiting 0: a command that "works"
# but prints nothing useful is not the page's promise.
EXPECT = {
    "&& lambda-conn demo\n": [
        r"2\. leaky, @managed_connection +\| 1500 +\| 1500 ",
        "invocations in",
    ],
    "lambda-conn demo --fanout": [r"1\. unprotected +\| 400 ", r"4\. RDSConnector +\| 400 "],
    "benchmarks/run.py": ["# lambda_conn benchmarks"],
    "lambda-conn soak app.handler -n 2000 --memory 512": [r"succeeded +2000\n", r"failed +0\n"],
    "lambda-conn soak app.handler -n 2000 --concurrency 8": [
        r"succeeded +2000\n",
        r"concurrency +8\n",
        r"environments created +[1-8]\n",
    ],
    "python3 -m pytest --lambda-conn ": ["1 passed"],
    "lambda-conn soak app.handler -n 300 \\": [r"succeeded +300\n", r"failed +0\n"],
}


def context_for(block: Block) -> Context:
    matches = [ctx for key, ctx in CONTEXTS.items() if key in block.text]
    assert len(matches) == 1, f"{block.name}: no (or several) contexts in CONTEXTS"
    return matches[0]


def test_every_shell_block_is_marked() -> None:
    found = blocks()
    assert len(found) >= 8
    unmarked = [b.name for b in found if b.marker not in MARKERS]
    assert unmarked == [], f"add a <!-- docs-test: ... --> marker ({', '.join(MARKERS)})"
    for block in found:
        if block.marker == "run":
            context_for(block)


def test_the_ci_block_is_what_ci_runs_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    (block,) = [b for b in blocks() if b.marker == "ci"]
    commands = [line for line in block.text.splitlines() if line and not line.startswith("#")]
    assert commands == ["python3 -m pip install -e '.[test]' && python3 -m pytest"]
    assert ci[-1] == commands[0]  # the last thing .ci/run does, so its status is CI's


def test_once_published_blocks_only_install_from_an_index() -> None:
    for block in blocks():
        if block.marker == "once-published":
            for line in filter(None, block.text.splitlines()):
                assert re.match(r'pip install "?lambda-conn(\[\w+\])?"?( |$)', line), line


@pytest.fixture
def bench_results_cleanup() -> Iterator[None]:
    existed = (ROOT / "bench-results").exists()
    yield
    if not existed:
        shutil.rmtree(ROOT / "bench-results", ignore_errors=True)


RUN_BLOCKS = [b for b in blocks() if b.marker == "run"]


@pytest.mark.usefixtures("bench_results_cleanup")
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.name for b in RUN_BLOCKS])
def test_the_block_runs_as_written(block: Block, tmp_path: Path, request: Any) -> None:
    cwd, env = context_for(block)(tmp_path, request)
    here = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.text],
        cwd=cwd,
        env={**os.environ, **here, **env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{output[-4000:]}"
    for key, wanted in EXPECT.items():
        if key in block.text:
            for pattern in wanted:
                assert re.search(pattern, output), (
                    f"{block.name}: no {pattern!r} in:\n{output[-4000:]}"
                )
