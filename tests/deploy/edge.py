"""The edge's nginx.conf out of deploy/k8s/edge.yaml, and a model of how nginx picks its location."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

EDGE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "edge.yaml"
LOCATION = re.compile(r'location\s+(=|~)?\s*(?:"([^"]+)"|([^\s{]+))\s*\{')
ALLOWED = re.compile(r"limit_except\s+([A-Z ]+)\{")


def nginx_conf() -> str:
    return next(doc for doc in yaml.safe_load_all(EDGE.read_text()) if doc["kind"] == "ConfigMap")["data"][
        "nginx.conf"
    ]


@dataclass(frozen=True)
class Location:
    kind: str  # "=" exact, "~" regex, "prefix"
    pattern: str
    methods: frozenset[str] | None  # None: any method
    body: str


def _block(conf: str, start: int) -> str:
    """The text from ``start`` (just after an opening brace) to its matching closing brace."""
    depth = 1
    for index in range(start, len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[index], 0)
        if depth == 0:
            return conf[start:index]
    raise ValueError("unbalanced braces in nginx.conf")


def locations(conf: str) -> list[Location]:
    found = []
    for match in LOCATION.finditer(conf):
        kind, pattern = match.group(1) or "prefix", match.group(2) or match.group(3)
        body = _block(conf, match.end())
        allowed = ALLOWED.search(body)
        methods = frozenset(allowed.group(1).split()) if allowed else None
        found.append(Location(kind, pattern, methods, body))
    return found


def route(conf: str, method: str, path: str) -> str:
    """What the edge does with a request: "proxy", "deny" (403, limit_except) or "404".

    nginx's order: an exact (=) match wins, then the first regex (~) that matches in the order of the file,
    else the prefix location "/", which answers 404 here. ``limit_except M`` allows M (GET also allows HEAD).
    """
    for location in locations(conf):
        if location.kind == "=" and location.pattern == path:
            return "proxy" if "proxy_pass" in location.body else "local"
    for location in locations(conf):
        if location.kind == "~" and re.search(location.pattern, path):
            allowed = set(location.methods or ())
            if "GET" in allowed:
                allowed.add("HEAD")
            if location.methods is not None and method not in allowed:
                return "deny"
            return "proxy"
    return "404"
