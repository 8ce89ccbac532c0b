""".dockerignore as BuildKit applies it (tools/dockerignore.py), and the build context of this project."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import cog_image, dockerignore

REPO_ROOT = Path(__file__).resolve().parents[2]


def excluded(patterns: list[str], path: str) -> bool:
    """Whether ``path`` is excluded, its parent folders matched first as the build walk does."""
    matcher = dockerignore.Matcher(patterns)
    info = None
    folders = path.split("/")[:-1]
    for depth in range(len(folders)):
        _, info = matcher.matches("/".join(folders[: depth + 1]), info)
    return matcher.matches(path, info)[0]


def test_reading_the_file():
    text = "\ufeff# comment\n\n  /weights/  \nfoo/../bar\n! /keep.txt\n #not a comment\r\n"
    assert dockerignore.read_patterns(text) == ["weights", "bar", "!keep.txt", "#not a comment"]


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        # A pattern matches from the root: unlike .gitignore, a bare name does not match deeper down.
        ("*.pyc", "a.pyc", True),
        ("*.pyc", "predictors/a.pyc", False),
        ("__pycache__", "predictors/__pycache__/a.pyc", False),
        ("**/*.pyc", "predictors/nst/a.pyc", True),
        ("**/*.pyc", "a.pyc", True),
        ("**/__pycache__", "predictors/__pycache__/a.cpython-311.pyc", True),
        ("**/__pycache__", "__pycache__", True),
        # A folder's pattern covers what is inside it; `*` and `?` stop at `/`, `**` does not.
        ("tests", "tests/unit/test_x.py", True),
        ("tests", "tests_more/x.py", False),
        ("predictors/*.py", "predictors/nst/predict.py", False),
        ("predictors/**/*.py", "predictors/nst/predict.py", True),
        ("predictors/**", "predictors", False),
        ("predictors/**", "predictors/nst", True),
        ("cog?.yaml", "cog1.yaml", True),
        ("cog?.yaml", "cog/.yaml", False),
        ("a[b-d]e", "ace", True),
        ("a[^b-d]e", "ace", False),
        # Regular-expression characters are literal.
        ("a+b(c).txt", "a+b(c).txt", True),
        ("a.txt", "aXtxt", False),
    ],
)
def test_pattern_semantics(pattern, path, hit):
    assert excluded([pattern], path) is hit


def test_the_last_matching_pattern_decides():
    assert not excluded(["docs", "!docs/keep.md"], "docs/keep.md")
    assert excluded(["docs", "!docs/keep.md"], "docs/other.md")
    assert excluded(["docs", "!docs/keep.md", "docs/keep.md"], "docs/keep.md")
    assert not excluded(["**", "!predictors"], "predictors/nst/predict.py")


def test_bad_patterns_are_refused():
    with pytest.raises(ValueError, match="illegal exclusion"):
        dockerignore.Matcher(["!"])
    with pytest.raises(ValueError, match="backslash"):
        dockerignore.Matcher(["a\\"])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in [
        "a.py",
        "a.pyc",
        "pkg/b.py",
        "pkg/b.pyc",
        "pkg/__pycache__/b.pyc",
        "docs/x.md",
        "docs/keep.md",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to("pkg")
    return tmp_path


def test_context_paths_walks_as_the_build_does(tree):
    kept = dockerignore.context_paths(tree, ["**/__pycache__", "*.pyc", "docs/"])
    # pkg/b.pyc stays (`*.pyc` is top level only); a link is kept as a link, not followed.
    assert kept == ["a.py", "empty", "link", "pkg", "pkg/b.py", "pkg/b.pyc"]


def test_an_exception_brings_back_a_file_and_its_folder(tree):
    assert dockerignore.context_paths(tree, ["docs", "!docs/keep.md", "pkg", "a*", "empty", "link"]) == [
        "docs",
        "docs/keep.md",
    ]
    # An exception with a wildcard makes the walk enter every excluded folder.
    assert dockerignore.context_paths(tree, ["*", "!**/b.py"]) == ["pkg", "pkg/b.py"]


def test_the_project_file_drops_bytecode_at_any_depth():
    patterns = dockerignore.patterns_of(REPO_ROOT)
    assert excluded(patterns, "predictors/common/__pycache__/weights.cpython-311.pyc")
    assert excluded(patterns, "predictors/nst/stylize.pyc")
    assert not excluded(patterns, "predictors/nst/stylize.py")


def test_the_project_context_holds_the_predictors_and_no_local_state():
    kept = set(dockerignore.context_paths(REPO_ROOT, dockerignore.patterns_of(REPO_ROOT)))
    sources = {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / "predictors").rglob("*.py")}
    assert sources <= kept
    assert {"weights_manifest.json", *cog_image.configs()} <= kept
    assert {path.relative_to(REPO_ROOT).as_posix() for path in cog_image.image_files()} <= kept
    assert "deploy/probe.py" in kept  # deploy/k8s runs it inside the container as its probes and preStop
    tops = {path.split("/")[0] for path in kept}
    assert not tops & {"tests", "tools", "bench", "weights", ".cache", ".venv", ".git", "outputs"}
    assert not [path for path in kept if "__pycache__" in path.split("/") or path.endswith(".pyc")]
