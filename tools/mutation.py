"""Mutation run: put realistic one-line bugs into a throwaway copy of the repository and see which tests fail.

The mutations live in ``tests/mutations/mutations.toml``; each ``[[mutation]]`` table names its ``area``
(nst, sd_style, musepose, pose, common, tools), the ``file``, the ``original`` snippet (it must occur exactly
once in that file), its ``replacement``, the ``tests`` (pytest paths or node ids) that must catch it and a
``description``. A mutation whose snippet no longer occurs is reported as stale: the code moved under it and
the entry needs rewriting; it counts neither as killed nor as survived.

How a run goes:
1. Each worker gets its own copy of the tracked (and untracked, not ignored) files in a temporary folder,
   with ``.venv`` linked to this checkout's and ``shared`` beside it linked to ``../shared`` (or no reference
   data at all with ``--no-shared``). Tiny weights come from this checkout's cache.
2. Baseline: every test selection runs once on the unmutated copy and must pass, else the run stops (a
   mutation "killed" by a test that fails anyway proves nothing).
3. Each mutation is applied in a worker's copy, its tests run with ``-x`` under a time limit, and the file is
   restored. Failing tests (or a collection error, or the time limit) kill it; passing tests let it survive.

Usage: ``python -m tools.mutation [--workers 2] [--no-shared] [--area nst] [--only ID ...] [--json PATH]``
(``make mutation`` runs it with the defaults). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MUTATIONS_FILE = REPO_ROOT / "tests" / "mutations" / "mutations.toml"
AREAS = ("nst", "sd_style", "musepose", "pose", "common", "tools")
REQUIRED = ("id", "area", "file", "original", "replacement", "tests", "description")
# pytest exit codes: 1 tests failed, 2 interrupted (a collection error: the mutant breaks an import).
KILLING_CODES = (1, 2)
DEFAULT_TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutation:
    id: str
    area: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    description: str


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | stale | error
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self, area: str | None = None) -> dict[str, int]:
        selected = [o for o in self.outcomes if area is None or o.mutation.area == area]
        return {
            status: sum(o.status == status for o in selected)
            for status in ("killed", "survived", "stale", "error")
        }


def load_mutations(path: Path = MUTATIONS_FILE) -> list[Mutation]:
    """The mutation list, checked: every field present, known areas, unique ids, existing files."""
    entries = tomllib.loads(path.read_text())["mutation"]
    mutations, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        missing = [key for key in REQUIRED if key not in entry]
        unknown = sorted(set(entry) - set(REQUIRED))
        if missing or unknown:
            raise ValueError(f"mutation #{number} ({entry.get('id')}): missing {missing}, unknown {unknown}")
        if entry["area"] not in AREAS:
            raise ValueError(f"mutation {entry['id']}: area {entry['area']!r} is not one of {AREAS}")
        if entry["id"] in seen:
            raise ValueError(f"mutation id {entry['id']!r} is repeated")
        if entry["original"] == entry["replacement"]:
            raise ValueError(f"mutation {entry['id']}: the replacement equals the original")
        if not entry["tests"]:
            raise ValueError(f"mutation {entry['id']}: no tests named")
        seen.add(entry["id"])
        mutations.append(Mutation(**{**entry, "tests": tuple(entry["tests"])}))
    return mutations


def repository_files(root: Path = REPO_ROOT) -> list[str]:
    """Tracked files plus untracked ones git does not ignore (new tests count before they are committed)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


def make_copy(destination: Path, shared: Path | None) -> Path:
    """``destination/repo``: the repository's files, ``.venv`` linked, ``destination/shared`` linked."""
    repo = destination / "repo"
    for name in repository_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    (repo / ".venv").symlink_to((REPO_ROOT / ".venv").resolve())
    if shared is not None:
        (destination / "shared").symlink_to(shared)
    return repo


def environment(no_shared: bool) -> dict[str, str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # A mutant can keep the original's size and mtime second; never let a stale .pyc stand in for it.
        "PYTHONDONTWRITEBYTECODE": "1",
        "TRIPTYCH_CACHE": str(REPO_ROOT / ".cache"),
    }
    if no_shared:
        env["TRIPTYCH_SHARED"] = "/nonexistent"
    else:
        env.pop("TRIPTYCH_SHARED", None)
    return env


def run_tests(repo: Path, tests: tuple[str, ...], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """pytest on ``tests`` in ``repo``: (exit code, output tail); exit code -1 when the time limit hit."""
    command = [
        str(repo / ".venv" / "bin" / "python"),
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        *tests,
    ]
    try:
        result = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout if isinstance(expired.stdout, str) else ""
        return -1, output[-2000:]
    return result.returncode, (result.stdout + result.stderr)[-2000:]


@contextlib.contextmanager
def applied(repo: Path, mutation: Mutation) -> Iterator[bool]:
    """The mutation written into ``repo`` for the duration of the block; yields False when it is stale."""
    path = repo / mutation.file
    original = path.read_text()
    occurrences = original.count(mutation.original)
    if occurrences > 1:
        raise ValueError(f"{mutation.id}: the original snippet occurs {occurrences} times in {mutation.file}")
    if occurrences == 0:
        yield False
        return
    path.write_text(original.replace(mutation.original, mutation.replacement))
    try:
        yield True
    finally:
        path.write_text(original)


def run_mutation(repo: Path, mutation: Mutation, env: dict[str, str], timeout: float) -> Outcome:
    started = time.monotonic()
    with applied(repo, mutation) as live:
        if not live:
            return Outcome(mutation, "stale", detail="the original snippet is not in the file")
        code, tail = run_tests(repo, mutation.tests, env, timeout)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome(mutation, "survived", seconds)
    if code in KILLING_CODES or code == -1:
        detail = "time limit" if code == -1 else _first_failure(tail)
        return Outcome(mutation, "killed", seconds, detail)
    return Outcome(mutation, "error", seconds, f"pytest exit code {code}: {tail[-600:]}")


def _first_failure(tail: str) -> str:
    for line in tail.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line[:200]
    return ""


def baseline(workers: list[Path], mutations: list[Mutation], env: dict[str, str], timeout: float) -> None:
    """Every distinct test selection passes on the unmutated copy (split over the workers)."""
    selections = sorted({mutation.tests for mutation in mutations})
    tests = sorted({test for selection in selections for test in selection})
    halves = [tests[index :: len(workers)] for index in range(len(workers))]
    with ThreadPoolExecutor(len(workers)) as pool:
        results = list(
            pool.map(
                lambda pair: run_tests(pair[0], tuple(pair[1]), env, timeout),
                zip(workers, halves, strict=True),
            )
        )
    for (code, tail), half in zip(results, halves, strict=True):
        if half and code != 0:
            raise SystemExit(f"The unmutated tests fail (exit code {code}); fix them first:\n{tail}")


def run(
    mutations: list[Mutation], *, workers: int, no_shared: bool, timeout: float, check_baseline: bool
) -> Report:
    started = time.monotonic()
    shared = None if no_shared else (REPO_ROOT.parent / "shared").resolve()
    if shared is not None and not shared.is_dir():
        shared = None
    env = environment(no_shared or shared is None)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="triptych-mutation-") as scratch:
        copies = [make_copy(Path(scratch) / f"worker{index}", shared) for index in range(workers)]
        if check_baseline:
            print(f"baseline: the tests of {len(mutations)} mutations on the unmutated copy", flush=True)
            baseline(copies, mutations, env, timeout)
        free: queue.Queue[Path] = queue.Queue()
        for copy in copies:
            free.put(copy)
        lock = threading.Lock()

        def work(mutation: Mutation) -> Outcome:
            repo = free.get()
            try:
                outcome = run_mutation(repo, mutation, env, timeout)
            finally:
                free.put(repo)
            with lock:
                done = len(report.outcomes) + 1
                report.outcomes.append(outcome)
                print(
                    f"[{done}/{len(mutations)}] {outcome.status:8s} {mutation.area:8s} {mutation.id} "
                    f"({outcome.seconds:.0f} s) {outcome.detail}",
                    flush=True,
                )
            return outcome

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, mutations))
    order = {mutation.id: index for index, mutation in enumerate(mutations)}
    report.outcomes.sort(key=lambda outcome: order[outcome.mutation.id])
    report.seconds = time.monotonic() - started
    return report


def score(counts: dict[str, int]) -> float | None:
    judged = counts["killed"] + counts["survived"]
    return counts["killed"] / judged if judged else None


def format_report(report: Report, *, no_shared: bool) -> str:
    lines = [
        f"Mutation run ({'without' if no_shared else 'with'} ../shared): {len(report.outcomes)} mutations "
        f"in {report.seconds / 60:.1f} min",
        "",
        f"{'area':10s} {'killed':>7s} {'survived':>9s} {'stale':>6s} {'error':>6s} {'score':>7s}",
    ]
    for area in (*AREAS, None):
        counts = report.counts(area)
        if area is not None and not any(counts.values()):
            continue
        value = score(counts)
        lines.append(
            f"{area or 'total':10s} {counts['killed']:7d} {counts['survived']:9d} {counts['stale']:6d} "
            f"{counts['error']:6d} {'-' if value is None else f'{value:.0%}':>7s}"
        )
    for status in ("survived", "stale", "error"):
        listed = [outcome for outcome in report.outcomes if outcome.status == status]
        if listed:
            lines += ["", f"{status}:"]
            lines += [
                f"  {o.mutation.id} ({o.mutation.file}): {o.mutation.description}"
                + (f" [{o.detail}]" if o.detail and status != "survived" else "")
                for o in listed
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutation", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="parallel copies (default 2)")
    parser.add_argument("--no-shared", action="store_true", help="run without ../shared (no golden data)")
    parser.add_argument("--area", choices=AREAS, action="append", help="only these areas")
    parser.add_argument("--only", nargs="+", metavar="ID", help="only these mutation ids")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per test run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    args = parser.parse_args(argv)

    mutations = load_mutations()
    if args.area:
        mutations = [m for m in mutations if m.area in args.area]
    if args.only:
        unknown = set(args.only) - {m.id for m in mutations}
        if unknown:
            parser.error(f"unknown mutation ids: {', '.join(sorted(unknown))}")
        mutations = [m for m in mutations if m.id in args.only]
    if args.list:
        for m in mutations:
            print(f"{m.area:8s} {m.id:40s} {m.file}: {m.description}")
        return 0
    report = run(
        mutations,
        workers=max(1, args.workers),
        no_shared=args.no_shared,
        timeout=args.timeout,
        check_baseline=not args.no_baseline,
    )
    print()
    print(format_report(report, no_shared=args.no_shared))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "seconds": round(report.seconds),
                    "no_shared": args.no_shared,
                    "outcomes": [
                        {"id": o.mutation.id, "area": o.mutation.area, "status": o.status, "detail": o.detail}
                        for o in report.outcomes
                    ],
                },
                indent=1,
            )
            + "\n"
        )
    return 0 if not report.counts()["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
