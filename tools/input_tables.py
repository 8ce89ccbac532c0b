"""Write each predictor's input table into its page under ``docs/``, from the schema the Cog CLI would write.

The tables are never edited by hand: ``make docs`` rewrites the block between
``<!-- inputs:NAME -->`` and ``<!-- /inputs:NAME -->`` from ``tools.cog_schema`` (the static, CLI-rule
schema), so a table always says what a user of the built image gets. ``--check`` exits 1 when a page is
out of date (the test suite runs it).

    python -m tools.input_tables [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from tools import cog_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "nst": ("predictors/nst/predict.py", "docs/nst.md"),
    "sd_style": ("predictors/sd_style/predict.py", "docs/sd_style.md"),
    "musepose": ("predictors/musepose/predict.py", "docs/musepose.md"),
}


def _type(prop: dict[str, Any]) -> str:
    if "allOf" in prop:
        return "choice"
    if prop.get("format") == "uri":
        return "file"
    if prop.get("type") == "array":
        return "list"
    return {"integer": "int", "number": "float", "boolean": "bool"}.get(prop.get("type"), "string")


def _code(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != "" else '`""`'


def _range(prop: dict[str, Any], enums: dict[str, Any]) -> str:
    if "allOf" in prop:
        enum = enums[prop["allOf"][0]["$ref"].rsplit("/", 1)[1]]
        return ", ".join(_code(choice) for choice in enum["enum"])
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f">= {low}"
    if high is not None:
        return f"<= {high}"
    return ""


def table(schema: dict[str, Any]) -> str:
    """The markdown table of the ``Input`` component, in the order the API shows the inputs."""
    components = schema["components"]["schemas"]
    inputs = components["Input"]
    required = set(inputs.get("required", []))
    rows = ["| input | type | default | range / choices | description |", "|---|---|---|---|---|"]
    for name, prop in sorted(inputs["properties"].items(), key=lambda item: item[1]["x-order"]):
        default = "required" if name in required else _code(prop.get("default"))
        description = prop.get("description", "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_type(prop)} | {default} | {_range(prop, components)} | {description} |")
    return "\n".join(rows) + "\n"


def render(page: str, name: str, block: str) -> str:
    start, end = f"<!-- inputs:{name} -->", f"<!-- /inputs:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(page):
        raise SystemExit(f"the page for {name} has no {start} ... {end} block")
    return pattern.sub(lambda _: f"{start}\n{block}{end}", page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is out of date; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, (predictor, doc) in PAGES.items():
        path = REPO_ROOT / doc
        page = path.read_text()
        updated = render(page, name, table(cog_schema.generate(REPO_ROOT / predictor)))
        if updated != page:
            stale.append(doc)
            if not args.check:
                path.write_text(updated)
    if args.check and stale:
        print(f"Out of date (run `make docs`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
