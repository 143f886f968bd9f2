"""Cold start as a Lambda user pays it: ``import lambda_conn`` from the built wheel.

    python3 benchmarks/cold_start.py                       # builds the wheel, 7 runs each
    python3 benchmarks/cold_start.py --wheel dist/lambda_conn-0.1.0-py3-none-any.whl
    python3 benchmarks/cold_start.py --out benchmarks/COLD_START.md

An editable install measures the wrong thing: its path hook (and any ``.pth`` file in a
shared site-packages) has already imported ``typing`` and friends before ``lambda_conn``
is reached. So this script makes two fresh venvs without pip or setuptools (nothing runs
at interpreter start-up but ``site``), installs the wheel into both and awslambdaric into
one, and runs, in fresh interpreters from a neutral directory:

    python -X importtime -c "import awslambdaric.bootstrap; import lambda_conn"
    python -X importtime -c "import lambda_conn"

The figure is the cumulative time of ``lambda_conn`` (what awslambdaric, i.e. the Lambda
runtime, has not already imported), minimum of N runs. Nothing here is asserted in tests:
``tests/test_cold_start.py`` checks the module set instead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WITH_RIC = "import awslambdaric.bootstrap; import lambda_conn"
ALONE = "import lambda_conn"
# What the measured import adds, printed beside the time (the set the test checks).
_ADDED = (
    "import sys; import awslambdaric.bootstrap; before = set(sys.modules); import lambda_conn; "
    "print(lambda_conn.__file__); print(' '.join(sorted(set(sys.modules) - before)))"
)


def build_wheel(outdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(ROOT)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (wheel,) = outdir.glob("lambda_conn-*.whl")
    return wheel


def make_venv(path: Path, *requirements: str) -> Path:
    """A venv with no pip and no setuptools (so no ``.pth`` runs at start-up)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *requirements],
        check=True,
    )
    return python


def lambda_conn_ms(python: Path, code: str, cwd: Path) -> float:
    """Cumulative import time of ``lambda_conn`` in one fresh interpreter, in ms."""
    err = subprocess.run(
        [str(python), "-X", "importtime", "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    for line in err.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[2] == "lambda_conn":
            return int(fields[1]) / 1000
    raise RuntimeError(f"no lambda_conn line in -X importtime output:\n{err}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="a built wheel (default: build one)")
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters each (7)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lambda-conn-cold-") as tmp:
        work = Path(tmp)
        wheel = args.wheel.resolve() if args.wheel else build_wheel(work / "dist")
        with_ric = make_venv(work / "with-ric", str(wheel), "awslambdaric")
        alone = make_venv(work / "alone", str(wheel))
        neutral = work / "cwd"  # -c puts the cwd first on sys.path: not the checkout
        neutral.mkdir()
        where, added = subprocess.run(
            [str(with_ric), "-c", _ADDED], cwd=neutral, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if not where.startswith(str(work)):
            raise RuntimeError(f"measured {where}, not the wheel installed in {work}")
        cases = (
            ("after `import awslambdaric.bootstrap` (the Lambda runtime)", with_ric, WITH_RIC),
            ("alone, in a fresh venv", alone, ALONE),
        )
        samples: list[list[float]] = [[] for _ in cases]
        for _ in range(args.runs):  # interleaved, so machine noise hits both cases alike
            for mine, (_, python, code) in zip(samples, cases, strict=True):
                mine.append(lambda_conn_ms(python, code, neutral))
        rows = [
            (label, min(mine), sorted(mine)[len(mine) // 2])
            for (label, _, _), mine in zip(cases, samples, strict=True)
        ]

    version = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lines = [
        f"## `import lambda_conn`, from {wheel.name}, Python {version}",
        "",
        f"`python -X importtime -c ...`, cumulative time of `lambda_conn`, {args.runs} fresh "
        "interpreters each. Made by `python3 benchmarks/cold_start.py --out "
        "benchmarks/COLD_START.md` (see its docstring).",
        "",
        "| case | min | median |",
        "| --- | ---: | ---: |",
        *(f"| {label} | {low:.2f} ms | {mid:.2f} ms |" for label, low, mid in rows),
        "",
        f"Modules it adds after awslambdaric's bootstrap: {added}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
