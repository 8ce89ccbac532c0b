"""The front door and the docs: short, pictures that exist, links that resolve, input tables generated
from the schema, and every command they show is one the current tools accept."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tools import cog_schema, input_tables

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

# The Cog CLI's commands and the flags each accepts (replicate/cog pkg/cli: root.go adds the commands;
# build.go addConfigFlag gives every command below -f/--file; predict.go/run.go share newPredictionCommand;
# serve.go, exec.go, push.go, login.go, init.go). `cog run` is the prediction command since `cog exec` took
# over running shell commands; `cog predict` stays as its alias.
COMMON_FLAGS = {"-f", "--file", "--progress", "--dockerfile", "--use-cuda-base-image", "--use-cog-base-image"}
PREDICTION_FLAGS = {"-i", "--input", "-o", "--output", "-e", "--env", "--json", "--gpus", "--setup-timeout"}
COG_FLAGS = {
    "build": COMMON_FLAGS
    | {"-t", "--tag", "--secret", "--no-cache", "--separate-weights", "--openapi-schema"},
    "predict": COMMON_FLAGS | PREDICTION_FLAGS,
    "run": COMMON_FLAGS | PREDICTION_FLAGS,
    "serve": COMMON_FLAGS | {"-p", "--port", "--host", "--upload-url", "--gpus"},
    "exec": COMMON_FLAGS | {"-p", "--publish", "-e", "--env", "--gpus"},
    "push": COMMON_FLAGS | {"--secret", "--no-cache", "--separate-weights", "--openapi-schema"},
    "login": set(),
}


def shell_commands(page: Path) -> list[list[str]]:
    """The simple commands in the page's ```bash blocks, as a shell splits them (quotes across lines kept)."""
    found: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        text = re.sub(r"(^|\s)#[^\n]*", r"\1", block.replace("\\\n", " "))
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace = " \t"
        lexer.wordchars += "@,:%+[]{}$()!^<>"
        words: list[str] = []
        for token in [*lexer, "\n"]:
            if token in ("\n", ";", "&&", "||", "|", "&"):
                if words:
                    found.append(words)
                words = []
            else:
                words.append(token)
    return found


def commands(tool: str) -> list[tuple[Path, list[str]]]:
    return [(page, words) for page in PAGES for words in shell_commands(page) if words[0] == tool]


def test_readme_is_a_front_door():
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "make predict" in text and "make test" in text
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) >= 3
    for picture in pictures:
        assert (REPO_ROOT / picture).is_file(), picture


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_input_tables_are_generated_from_the_schema():
    assert input_tables.main(["--check"]) == 0, "run `make docs`"


def test_input_table_rows_follow_the_schema():
    schema = {
        "components": {
            "schemas": {
                "Input": {
                    "properties": {
                        "steps": {
                            "type": "integer",
                            "default": 20,
                            "minimum": 1,
                            "maximum": 50,
                            "x-order": 1,
                        },
                        "image": {"type": "string", "format": "uri", "x-order": 0, "description": "a|b"},
                        "mode": {
                            "allOf": [{"$ref": "#/components/schemas/mode"}],
                            "default": "x",
                            "x-order": 2,
                        },
                    },
                    "required": ["image"],
                },
                "mode": {"enum": ["x", "y"]},
            }
        }
    }
    rows = input_tables.table(schema).splitlines()[2:]
    assert rows == [
        "| `image` | file | required |  | a\\|b |",
        "| `steps` | int | `20` | 1 to 50 |  |",
        "| `mode` | choice | `x` | `x`, `y` |  |",
    ]


def test_cog_commands_use_the_current_cli():
    found = commands("cog")
    assert found, "the docs show no cog command"
    for page, words in found:
        command = words[1]
        assert command in COG_FLAGS, f"{page.name}: `cog {command}` is not a command of the current CLI"
        arguments = words[2:]
        if command == "exec":
            # exec.go sets SetInterspersed(false): from the first positional word on, it is the command's.
            index = 0
            while index < len(arguments) and arguments[index].startswith("-"):
                index += 2 if arguments[index] in ("-f", "--file", "-p", "--publish", "-e", "--env") else 1
            arguments = arguments[:index]
        flags = {word.split("=", 1)[0] for word in arguments if word.startswith("-")}
        unknown = flags - COG_FLAGS[command]
        assert not unknown, f"{page.name}: `cog {command}` has no {sorted(unknown)}"
        if command in ("predict", "run"):
            assert_inputs_exist(page, words)


def assert_inputs_exist(page: Path, words: list[str]) -> None:
    """Each ``-i name=...`` is an input of the predictor that the command's config file names."""
    config = words[words.index("-f") + 1] if "-f" in words else "cog.yaml"
    predictor = yaml.safe_load((REPO_ROOT / config).read_text())["predict"]
    inputs = cog_schema.generate(REPO_ROOT / predictor)["components"]["schemas"]["Input"]["properties"]
    for index, word in enumerate(words[:-1]):
        if word in ("-i", "--input"):
            name = words[index + 1].split("=", 1)[0]
            assert name in inputs, f"{page.name}: {config} has no input {name!r} ({' '.join(words)})"


def test_make_targets_exist():
    found = commands("make")
    assert found
    for page, words in found:
        targets = [word for word in words[1:] if "=" not in word and not word.startswith("-")]
        result = subprocess.run(
            ["make", "-n", *targets],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert "No rule to make target" not in result.stderr, f"{page.name}: {' '.join(words)}"


def test_python_modules_exist():
    for page in PAGES:
        for words in shell_commands(page):
            for index, word in enumerate(words[:-1]):
                module = words[index + 1]
                if word == "-m" and module.split(".")[0] in ("tools", "bench", "predictors"):
                    assert importlib.util.find_spec(module) is not None, f"{page.name}: {module}"
