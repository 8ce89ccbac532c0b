"""tools/mutation.py: the mutation list is well formed, and a mutation is applied, judged and undone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import mutation
from tools.mutation import AREAS, Mutation, Outcome, Report, load_mutations, run_mutation

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_mutation_list_is_well_formed():
    mutations = load_mutations()
    assert len(mutations) >= 60
    assert {m.area for m in mutations} == set(AREAS)
    for m in mutations:
        assert (REPO_ROOT / m.file).is_file(), m.id
        assert all((REPO_ROOT / test.split("::")[0]).exists() for test in m.tests), m.id
        assert m.description.endswith("."), m.id


def test_a_malformed_entry_is_refused(tmp_path):
    path = tmp_path / "mutations.toml"
    path.write_text('[[mutation]]\nid = "x"\narea = "nst"\nfile = "a.py"\n')
    with pytest.raises(ValueError, match="missing"):
        load_mutations(path)
    path.write_text(
        '[[mutation]]\nid = "x"\narea = "gpu"\nfile = "a.py"\noriginal = "a"\nreplacement = "b"\n'
        'tests = ["t.py"]\ndescription = "d."\n'
    )
    with pytest.raises(ValueError, match="area"):
        load_mutations(path)


@pytest.fixture
def project(tmp_path) -> Path:
    """A two-file project with this interpreter as its .venv."""
    (tmp_path / "calc.py").write_text("def add(a, b):\n    # the sum\n    return a + b\n")
    (tmp_path / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    (tmp_path / ".venv").symlink_to((REPO_ROOT / ".venv").resolve())
    return tmp_path


def _mutation(original: str, replacement: str) -> Mutation:
    return Mutation("m", "common", "calc.py", original, replacement, ("test_calc.py",), "A bug.")


def test_killed_survived_and_stale(project):
    env = mutation.environment(no_shared=True)
    source = (project / "calc.py").read_text()
    assert run_mutation(project, _mutation("a + b", "a - b"), env, 120).status == "killed"
    assert run_mutation(project, _mutation("# the sum", "# the total"), env, 120).status == "survived"
    assert run_mutation(project, _mutation("a * b", "a / b"), env, 120).status == "stale"
    assert (project / "calc.py").read_text() == source  # every mutation was undone


def test_an_ambiguous_snippet_is_an_error(project):
    (project / "calc.py").write_text("x = 1\nx = 1\n")
    with pytest.raises(ValueError, match="occurs 2 times"):
        run_mutation(project, _mutation("x = 1", "x = 2"), mutation.environment(no_shared=True), 120)


def test_scores_per_area_leave_stale_mutations_out():
    def outcome(area: str, status: str) -> Outcome:
        return Outcome(Mutation(f"{area}-{status}", area, "f", "a", "b", ("t",), "d."), status)

    report = Report(
        [
            outcome("nst", "killed"),
            outcome("nst", "survived"),
            outcome("nst", "stale"),
            outcome("pose", "killed"),
        ]
    )
    assert report.counts("nst") == {"killed": 1, "survived": 1, "stale": 1, "error": 0}
    assert mutation.score(report.counts("nst")) == 0.5
    assert mutation.score(report.counts()) == pytest.approx(2 / 3)
    text = mutation.format_report(report, no_shared=False)
    assert "nst              1         1      1      0     50%" in text
    assert "survived:\n  nst-survived (f): d." in text and "stale:\n  nst-stale (f): d." in text
