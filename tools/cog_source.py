"""Read a predictor's source the way the Cog CLI does, without importing it.

A Python ``ast`` port of package ``python`` of replicate/cog (``pkg/schema/python``, mirrored at commit
6110c912, v0.22.0-5), which walks a tree-sitter parse tree. Each function names the Go function it
mirrors. The CLI reads many values from the *source text* of a tree-sitter node, not from its meaning;
``Source`` gives every ``ast`` node the text and the node type tree-sitter would give it, so that the same
text rules apply (and the same things are dropped or garbled):

- a string is its text less the first and last character (three for triple quotes, two after ``r``):
  no escape is decoded, and ``"a" "b"`` (implicit concatenation) becomes ``a" "b``;
- ``ge``/``le``/``min_length``/``max_length`` are Go ``strconv.ParseFloat`` of the text: a name such as
  ``MAX_WINDOW`` or an expression such as ``2 ** 10`` is silently dropped;
- a grouping parenthesis makes a node a ``parenthesized_expression``, which no literal rule accepts;
- a comment inside a list literal is a child of the list in tree-sitter, so the list is no literal.

Not ported (``NotMirrored`` is raised instead): reading classes or parents imported from other files of
the project, ``Annotated[X, Opaque]`` and ``TypedDict``, and train mode.
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import io
import keyword
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.cog_types import (
    NONE_VALUE,
    Annotation,
    DefaultValue,
    ErrorKind,
    FieldType,
    ImportContext,
    ImportEntry,
    InputType,
    ModelField,
    NotMirrored,
    Primitive,
    SchemaError,
    SchemaType,
    TypeScope,
    resolve_input_type,
    resolve_schema_type,
    unsupported_type,
)

# -- source text and tree-sitter node types ------------------------------------------------------------------


class Source:
    """A parsed file with tree-sitter's view of each expression: its text and its node type."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self.module = ast.parse(text)
        except SyntaxError as error:
            # tree-sitter parses anything (with ERROR nodes); the Python runtime would refuse this file.
            raise NotMirrored(f"a file Python cannot parse ({error})") from None
        self._line_starts = [0] + [match.end() for match in re.finditer(r"\r\n|\r|\n", text)]
        ends = [*self._line_starts[1:], len(text)]
        self._lines = [text[start:end] for start, end in zip(self._line_starts, ends, strict=True)]
        self._tokens: list[tuple[int, int, str]] = []
        self._comments: list[int] = []
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in _LAYOUT_TOKENS:
                continue
            start = self._line_starts[token.start[0] - 1] + token.start[1]
            if token.type == tokenize.COMMENT:
                self._comments.append(start)
            else:
                self._tokens.append((start, self._line_starts[token.end[0] - 1] + token.end[1], token.string))
        self._token_starts = [start for start, _, _ in self._tokens]

    def _offset(self, lineno: int, col_bytes: int) -> int:
        line = self._lines[lineno - 1]
        return self._line_starts[lineno - 1] + len(line.encode()[:col_bytes].decode(errors="replace"))

    def _own_span(self, node: ast.AST) -> tuple[int, int]:
        return self._offset(node.lineno, node.col_offset), self._offset(node.end_lineno, node.end_col_offset)

    def span(self, node: ast.AST) -> tuple[int, int]:
        """The node's extent with any grouping parentheses around it, as tree-sitter's outermost node."""
        start, end = self._own_span(node)
        first = bisect.bisect_left(self._token_starts, start)
        after = bisect.bisect_left(self._token_starts, end)
        while (
            first > 0
            and after < len(self._tokens)
            and self._tokens[first - 1][2] == "("
            and self._tokens[after][2] == ")"
            and self._grouping(first - 1)
        ):
            first, after = first - 1, after + 1
            start, end = self._tokens[first][0], self._tokens[after - 1][1]
        return start, end

    def _grouping(self, index: int) -> bool:
        """Whether the ``(`` at token ``index`` groups an expression rather than opening a call or a def."""
        if index == 0:
            return True
        previous = self._tokens[index - 1][2]
        opens_call = (
            previous in (")", "]")
            or previous[-1:] in ('"', "'")
            or (previous.isidentifier() and not keyword.iskeyword(previous))
        )
        return not opens_call

    def parenthesized(self, node: ast.AST) -> bool:
        return self.span(node)[0] != self._own_span(node)[0]

    def content(self, node: ast.AST) -> str:
        """``Content`` (python/nodes.go): the node's source text."""
        start, end = self.span(node)
        return self.text[start:end]

    def comment_between_children(self, node: ast.AST, children: list[ast.AST]) -> bool:
        """Whether a comment inside ``node`` lies outside all ``children``: a named child in tree-sitter."""
        start, end = self._own_span(node)
        spans = [self.span(child) for child in children]
        first = bisect.bisect_left(self._comments, start)
        for offset in self._comments[first:]:
            if offset >= end:
                break
            if not any(child_start <= offset < child_end for child_start, child_end in spans):
                return True
        return False

    def kind(self, node: ast.AST) -> str:
        """The tree-sitter node type of ``node`` (for the node types the rules look at)."""
        if self.parenthesized(node):
            return "parenthesized_expression"
        if isinstance(node, ast.Constant):
            value = node.value
            if value is None:
                return "none"
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int):
                return "integer"
            if isinstance(value, float | complex):
                return "float"
            if value is Ellipsis:
                return "ellipsis"
            return "string"
        if isinstance(node, ast.Tuple):
            return "tuple" if self.content(node).startswith("(") else "expression_list"
        if isinstance(node, ast.UnaryOp):
            return "not_operator" if isinstance(node.op, ast.Not) else "unary_operator"
        return _NODE_TYPES.get(type(node), type(node).__name__.lower())


_LAYOUT_TOKENS = {
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
    tokenize.ENCODING,
}
_NODE_TYPES: dict[type, str] = {
    ast.JoinedStr: "string",
    ast.Name: "identifier",
    ast.Attribute: "attribute",
    ast.Call: "call",
    ast.Subscript: "subscript",
    ast.List: "list",
    ast.Dict: "dictionary",
    ast.Set: "set",
    ast.BinOp: "binary_operator",
    ast.BoolOp: "boolean_operator",
    ast.Compare: "comparison_operator",
    ast.ListComp: "list_comprehension",
    ast.SetComp: "set_comprehension",
    ast.DictComp: "dictionary_comprehension",
    ast.GeneratorExp: "generator_expression",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional_expression",
    ast.NamedExpr: "named_expression",
    ast.Await: "await",
    ast.Starred: "list_splat",
    ast.Slice: "slice",
}


# -- literals (python/literals.go) ---------------------------------------------------------------------------

_INT_PREFIXES = {"0x": 16, "0o": 8, "0b": 2}
_DECIMAL_FLOAT = re.compile(r"[+-]?(?=\.?[0-9])[0-9_]*(\.[0-9_]*)?([eE][+-]?[0-9][0-9_]*)?")
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?=\.?[0-9a-fA-F])[0-9a-fA-F_]*(\.[0-9a-fA-F_]*)?[pP][+-]?[0-9][0-9_]*")
_SPECIAL_FLOAT = re.compile(r"([+-]?)(inf|infinity)|nan", re.IGNORECASE)
_INT64 = (-(2**63), 2**63 - 1)


def _underscores_ok(text: str) -> bool:
    """``underscoreOK`` (Go strconv): an underscore only between digits, or after a base prefix."""
    body = text[1:] if text[:1] in "+-" else text
    saw, index, hexadecimal = "^", 0, False
    if len(body) >= 2 and body[0] == "0" and body[1].lower() in "box":
        index, saw, hexadecimal = 2, "0", body[1].lower() == "x"
    for char in body[index:]:
        if char.isdigit() or (hexadecimal and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def go_parse_int(text: str) -> int | None:
    """Go ``strconv.ParseInt(text, 0, 64)``: sign, base prefix (or a leading 0 for octal), underscores."""
    body = text[1:] if text[:1] in "+-" else text
    base = 10
    digits = body
    if body[:2].lower() in _INT_PREFIXES:
        base, digits = _INT_PREFIXES[body[:2].lower()], body[2:]
    elif body[:1] == "0" and len(body) > 1:
        base, digits = 8, body[1:]
    if "_" in text and not _underscores_ok(text):
        return None
    digits = digits.replace("_", "")
    if not re.fullmatch(r"[0-9a-zA-Z]+", digits):
        return None
    try:
        value = int(digits, base)
    except ValueError:
        return None
    value = -value if text.startswith("-") else value
    return value if _INT64[0] <= value <= _INT64[1] else None


def go_parse_float(text: str) -> float | None:
    """Go ``strconv.ParseFloat(text, 64)``: decimal, hex with exponent, inf/infinity/nan; overflow fails."""
    special = _SPECIAL_FLOAT.fullmatch(text)
    if special:
        if special.group(2) is None:
            return float("nan")
        return float("-inf") if special.group(1) == "-" else float("inf")
    if _DECIMAL_FLOAT.fullmatch(text):
        value = float(text.replace("_", "")) if _underscores_ok(text) else None
    elif _HEX_FLOAT.fullmatch(text):
        value = float.fromhex(text.replace("_", "")) if _underscores_ok(text) else None
    else:
        return None
    if value is None or value in (float("inf"), float("-inf")):
        return None
    return value


def parse_string_literal(text: str) -> str | None:
    """``parseStringLiteral`` (python/literals.go): quotes cut from the raw text, no escape decoded."""
    if text.startswith(('"""', "'''")):
        return text[3:-3] if len(text) >= 6 else None
    if text.startswith(('"', "'")):
        return text[1:-1] if len(text) >= 2 else None
    if text.startswith(('r"', "r'")):
        return text[2:-1] if len(text) >= 3 else None
    return None


class Literals:
    """Literal parsing (python/literals.go) and module-scope lookups (python/module_scope.go) on one file."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.scope: dict[str, DefaultValue] = {}

    def parse_default_value(self, node: ast.AST) -> DefaultValue | None:
        """``parseDefaultValue`` (python/literals.go)."""
        kind = self.source.kind(node)
        text = self.source.content(node)
        if kind == "none":
            return NONE_VALUE
        if kind in ("true", "false"):
            return DefaultValue("bool", kind == "true")
        if kind == "integer":
            number = go_parse_int(text)
            return None if number is None else DefaultValue("int", number)
        if kind == "float":
            real = go_parse_float(text)
            return None if real is None else DefaultValue("float", real)
        if kind == "string":
            string = parse_string_literal(text)
            return None if string is None else DefaultValue("str", string)
        if kind == "list":
            items = self.parse_list_literal(node)
            return None if items is None else DefaultValue("list", items=items)
        if kind == "dictionary":
            keys, values = self._parse_dict_literal(node)
            return DefaultValue("dict", keys=keys, values=values)
        if kind == "set":
            items = self._parse_elements(node)
            return None if items is None else DefaultValue("set", items=items)
        if kind == "unary_operator":
            number = go_parse_int(text.strip())
            if number is not None:
                return DefaultValue("int", number)
            real = go_parse_float(text.strip())
            return None if real is None else DefaultValue("float", real)
        if kind == "tuple":
            parsed = (self.parse_default_value(element) for element in node.elts)
            return DefaultValue("list", items=tuple(value for value in parsed if value is not None))
        return None

    def parse_list_literal(self, node: ast.AST) -> tuple[DefaultValue, ...] | None:
        """``parseListLiteral`` (python/literals.go): every element must parse."""
        if self.source.kind(node) != "list":
            return None
        return self._parse_elements(node)

    def _parse_elements(self, node: ast.List | ast.Set) -> tuple[DefaultValue, ...] | None:
        # A comment between the elements is one more named child, and no literal.
        if self.source.comment_between_children(node, node.elts):
            return None
        items = []
        for element in node.elts:
            value = self.parse_default_value(element)
            if value is None:
                return None
            items.append(value)
        return tuple(items)

    def _parse_dict_literal(
        self, node: ast.Dict
    ) -> tuple[tuple[DefaultValue, ...], tuple[DefaultValue, ...]]:
        """``parseDictLiteral`` (python/literals.go): pairs that do not parse are left out."""
        keys, values = [], []
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:
                continue
            key, value = self.parse_default_value(key_node), self.parse_default_value(value_node)
            if key is not None and value is not None:
                keys.append(key)
                values.append(value)
        return tuple(keys), tuple(values)

    def parse_number_literal(self, node: ast.AST) -> float | None:
        """``parseNumberLiteral`` (python/literals.go): ParseFloat of the text; a name is no number."""
        return go_parse_float(self.source.content(node).strip())

    def parse_bool_literal(self, node: ast.AST) -> bool | None:
        """``parseBoolLiteral`` (python/literals.go)."""
        kind = self.source.kind(node)
        if kind in ("true", "false"):
            return kind == "true"
        return {"True": True, "False": False}.get(self.source.content(node))

    def string_literal(self, node: ast.AST) -> str | None:
        return parse_string_literal(self.source.content(node))

    def collect_module_scope(self) -> None:
        """``collectModuleScope`` (python/module_scope.go): top-level ``NAME = literal`` (the last wins)."""
        for statement in self.source.module.body:
            target, value = _single_assignment(statement)
            if not isinstance(target, ast.Name) or value is None:
                continue
            parsed = self.parse_default_value(value)
            if parsed is not None:
                self.scope[target.id] = parsed

    def resolve_string_expr(self, node: ast.AST) -> str | None:
        """``resolveStringExpr`` (python/module_scope.go): a string literal, or a module-level string name."""
        string = self.string_literal(node)
        if string is not None:
            return string
        if self.source.kind(node) == "identifier":
            value = self.scope.get(node.id)
            if value is not None and value.kind == "str":
                return value.value
        return None

    def resolve_default_expr(self, node: ast.AST) -> DefaultValue | None:
        """``resolveDefaultExpr`` (python/module_scope.go): a literal, or a module-level name bound to one."""
        value = self.parse_default_value(node)
        if value is not None:
            return value
        if self.source.kind(node) == "identifier":
            return self.scope.get(node.id)
        return None

    def resolve_choices_expr(self, node: ast.AST) -> tuple[DefaultValue, ...] | None:
        """``resolveChoicesExpr`` (python/module_scope.go): a list literal, a module-level list name,
        ``list(D.keys())`` / ``list(D.values())`` of a module-level dict, or ``+`` of those."""
        kind = self.source.kind(node)
        if kind == "list":
            return self.parse_list_literal(node)
        if kind == "identifier":
            value = self.scope.get(node.id)
            return value.items if value is not None and value.kind == "list" else None
        if kind == "call":
            return self._resolve_choices_call(node)
        if kind == "binary_operator" and isinstance(node.op, ast.Add):
            left = self.resolve_choices_expr(node.left)
            right = self.resolve_choices_expr(node.right) if left is not None else None
            return None if right is None else left + right
        return None

    def _resolve_choices_call(self, node: ast.Call) -> tuple[DefaultValue, ...] | None:
        """``resolveChoicesCall`` (python/module_scope.go)."""
        if self.source.content(node.func) != "list":
            return None
        # The first argument must be positional: a keyword argument is a keyword_argument node, no call.
        argument = node.args[0] if node.args else None
        if argument is None or self.source.kind(argument) != "call":
            return None
        method = argument.func
        if self.source.kind(method) != "attribute" or self.source.kind(method.value) != "identifier":
            return None
        value = self.scope.get(method.value.id)
        if value is None or value.kind != "dict":
            return None
        return {"keys": value.keys, "values": value.values}.get(method.attr)


def _single_assignment(statement: ast.stmt) -> tuple[ast.AST | None, ast.AST | None]:
    """The left and right of a tree-sitter ``assignment`` (``x = v``, ``x: T = v``); chains are none."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        return statement.targets[0], statement.value
    if isinstance(statement, ast.AnnAssign):
        return statement.target, statement.value
    return None, None


# -- imports (python/imports.go) -----------------------------------------------------------------------------


def collect_imports(module: ast.Module) -> ImportContext:
    """``CollectImports`` (python/imports.go): top-level imports only, then the builtins."""
    imports = ImportContext()
    for statement in module.body:
        if isinstance(statement, ast.ImportFrom):
            source_module = "." * statement.level + (statement.module or "")
            for alias in statement.names:
                if alias.name != "*":
                    imports.names[alias.asname or alias.name] = ImportEntry(source_module, alias.name)
        elif isinstance(statement, ast.Import):
            for alias in statement.names:
                imports.names[alias.asname or alias.name] = ImportEntry(alias.name, alias.name)
    for builtin in ("str", "int", "float", "bool", "list", "dict", "set", "None"):
        imports.names.setdefault(builtin, ImportEntry("builtins", builtin))
    return imports


# -- annotations (python/annotations.go) ---------------------------------------------------------------------


def _split_top_level(text: str, separator: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def parse_type_from_string(text: str) -> Annotation | None:
    """``parseTypeFromString`` (python/annotations.go)."""
    text = text.strip()
    if not text:
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return parse_type_from_string(text[1:-1])
    pipes = _split_top_level(text, "|")
    if len(pipes) > 1:
        members = [parse_type_from_string(part.strip()) for part in pipes]
        return None if None in members else Annotation("union", args=tuple(members))
    bracket = text.find("[")
    if bracket >= 0 and text.endswith("]"):
        args = [
            parse_type_from_string(part.strip()) for part in _split_top_level(text[bracket + 1 : -1], ",")
        ]
        if None in args:
            return None
        return Annotation("generic", text[:bracket].strip(), tuple(args))
    if all(part and re.fullmatch(r"[A-Za-z0-9_]+", part) for part in text.split(".")):
        return Annotation("simple", text)
    return None


def parse_type_annotation(source: Source, node: ast.AST) -> Annotation:
    """``parseTypeAnnotation`` (python/annotations.go)."""
    kind = source.kind(node)
    text = source.content(node)
    if kind in ("identifier", "attribute"):
        return Annotation("simple", text)
    if kind == "none":
        return Annotation("simple", "None")
    if kind == "subscript":
        # tree-sitter lists X[a, b] as two subscript children, but X[(a, b)] as one tuple.
        index = node.slice
        parts = index.elts if source.kind(index) == "expression_list" else [index]
        args = tuple(parse_type_annotation(source, part) for part in parts)
        return Annotation("generic", source.content(node.value), args)
    if kind == "binary_operator":
        if not isinstance(node.op, ast.BitOr):
            raise unsupported_type("non-union binary operator in type annotation")
        members: list[Annotation] = []
        for side in (node.left, node.right):
            member = parse_type_annotation(source, side)
            members.extend(member.args if member.kind == "union" else [member])
        return Annotation("union", args=tuple(members))
    if kind == "string":
        parsed = parse_type_from_string(text.lstrip("\"'").rstrip("\"'"))
        if parsed is None:
            raise unsupported_type(f"string annotation: {text}")
        return parsed
    parsed = parse_type_from_string(text)
    if parsed is None:
        raise unsupported_type(f"{kind}: {text}")
    return parsed


# -- Input() calls and parameters (python/inputs.go) ---------------------------------------------------------


@dataclass
class InputInfo:
    """``inputCallInfo`` (python/inputs.go): what an ``Input(...)`` call states, as far as it resolves."""

    default: DefaultValue | None = None
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: tuple[DefaultValue, ...] = ()
    deprecated: bool | None = None
    accept: str | None = None


@dataclass
class InputField:
    """``InputField`` (types.go): one parameter of predict()."""

    name: str
    order: int
    input_type: InputType
    field_type: FieldType
    info: InputInfo = field(default_factory=InputInfo)


@dataclass
class PredictorInfo:
    """``PredictorInfo`` (types.go), and the warnings the CLI prints to stderr while parsing."""

    inputs: dict[str, InputField]
    output: SchemaType
    supports_streaming: bool
    warnings: list[str]


class FileContext:
    """``pythonFileContext`` (python/target.go): one parsed file and what its top level defines."""

    def __init__(self, path: Path, source_dir: Path) -> None:
        self.path = path
        self.source = Source(path.read_text(encoding="utf-8"))
        self.literals = Literals(self.source)
        self.imports = collect_imports(self.source.module)
        self.literals.collect_module_scope()
        self.source_dir = source_dir
        self.class_nodes = [
            statement for statement in self.source.module.body if isinstance(statement, ast.ClassDef)
        ]
        self.types = TypeScope(self.imports, is_local_module=self.is_local_module)
        self._collect_models()
        self.attributes: dict[str, InputInfo] = {}
        self.methods: dict[str, tuple[list[str], InputInfo]] = {}
        self._collect_input_registry()

    def find_class(self, name: str) -> ast.ClassDef | None:
        """``findClassByName`` (python/target.go): the first top-level class of that name."""
        return next((node for node in self.class_nodes if node.name == name), None)

    def is_local_module(self, module: str) -> bool:
        """Whether the CLI would read ``module`` from the project (``moduleToFilePath``,
        ``isKnownExternalModule`` in python/models.go): a ``.py`` file, or a package folder whose modules
        it tries next, under the project root (or beside the file, for a relative import)."""
        dot = module.find(".")
        if (module[:dot] if dot > 0 else module).lstrip(".") in _KNOWN_EXTERNAL:
            return False
        level = len(module) - len(module.lstrip("."))
        parts = module[level:].split(".")
        base = self.path.parents[level - 1] if level else self.source_dir
        target = base.joinpath(*parts) if parts[0] else base
        return target.with_suffix(".py").is_file() or target.is_dir()

    # python/models.go

    def _collect_models(self) -> None:
        """``collectModelClasses`` (python/models.go): top-level classes that name BaseModel as a base."""
        typed_dicts = self.types.typed_dicts
        for class_node in self.class_nodes:
            bases = [self.source.content(base) for base in class_node.bases]
            if any(self._names_typed_dict(base) for base in bases):
                typed_dicts.add(class_node.name)
            elif any(self._names_base_model(base) for base in class_node.bases):
                self.types.models[class_node.name] = list(self._model_fields(class_node))

    def _names_typed_dict(self, base: str) -> bool:
        """``TypedDictClassInfo`` (python/models.go), only to refuse such classes later."""
        return (
            base == "TypedDict"
            or base.endswith(".TypedDict")
            or self.imports.is_typed_dict(base)
            or base in self.types.typed_dicts
        )

    def _names_base_model(self, base: ast.AST) -> bool:
        """``InheritsFromBaseModel`` (python/models.go)."""
        kind = self.source.kind(base)
        text = self.source.content(base)
        if kind == "identifier":
            return self.imports.is_base_model(text) or text == "BaseModel"
        return kind == "attribute" and text.endswith(".BaseModel")

    def _model_fields(self, class_node: ast.ClassDef) -> Iterator[ModelField]:
        """``extractClassAnnotations`` / ``parseAnnotatedAssignment`` (python/models.go)."""
        for statement in class_node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            try:
                annotation = parse_type_annotation(self.source, statement.annotation)
            except SchemaError:
                continue
            default = (
                self.literals.parse_default_value(statement.value) if statement.value is not None else None
            )
            yield ModelField(statement.target.id, annotation, default)

    # python/inputs.go

    def is_input_call(self, node: ast.AST) -> bool:
        """``isInputCall`` (python/inputs.go): ``Input(...)`` or an alias of ``cog.Input``."""
        if self.source.kind(node) != "call":
            return False
        name = self.source.content(node.func)
        entry = self.imports.get(name)
        return name == "Input" or (entry is not None and entry.module == "cog" and entry.original == "Input")

    def parse_input_call(self, node: ast.Call, param_name: str) -> InputInfo:
        """``parseInputCall`` (python/inputs.go): the keyword arguments, by the CLI's rules for each."""
        info = InputInfo()
        literals = self.literals
        for argument in node.keywords:
            key, value = argument.arg, argument.value
            if key == "default":
                info.default = literals.resolve_default_expr(value) or NONE_VALUE
            elif key == "default_factory":
                raise SchemaError(
                    ErrorKind.DEFAULT_FACTORY_NOT_SUPPORTED,
                    f"parameter '{param_name}': default_factory is not supported in static schema generation",
                )
            elif key == "description":
                info.description = _keep(literals.resolve_string_expr(value), info.description)
            elif key in ("ge", "le"):
                setattr(info, key, _keep(literals.parse_number_literal(value), getattr(info, key)))
            elif key in ("min_length", "max_length"):
                number = literals.parse_number_literal(value)
                setattr(info, key, _keep(_go_uint64(number), getattr(info, key)))
            elif key in ("regex", "accept"):
                setattr(info, key, _keep(literals.string_literal(value), getattr(info, key)))
            elif key == "choices":
                choices = literals.parse_list_literal(value)
                if choices is None:
                    choices = literals.resolve_choices_expr(value)
                if choices is None:
                    raise SchemaError(
                        ErrorKind.CHOICES_NOT_RESOLVABLE,
                        f"parameter '{param_name}': choices expression cannot be statically resolved",
                    )
                info.choices = choices
            elif key == "deprecated":
                info.deprecated = _keep(literals.parse_bool_literal(value), info.deprecated)
        return info

    def _collect_input_registry(self) -> None:
        """``collectInputRegistry`` (python/inputs.go): ``Input(...)`` held by class attributes, or returned
        by methods, that a parameter default may name (``Inputs.prompt``, ``Inputs.steps(default=4)``)."""
        for class_node in self.class_nodes:
            class_name = class_node.name
            for statement in class_node.body:
                target, value = _single_assignment(statement)
                if isinstance(target, ast.Name) and value is not None and self.is_input_call(value):
                    key = f"{class_name}.{target.id}"
                    # The CLI skips an entry it cannot parse; a parameter naming it then fails on its own.
                    with contextlib.suppress(SchemaError):
                        self.attributes[key] = self.parse_input_call(value, key)
                if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
                    self._collect_input_method(class_name, statement)

    def _collect_input_method(self, class_name: str, function: ast.FunctionDef) -> None:
        """``collectInputMethod`` (python/inputs.go)."""
        params = [arg.arg for arg in _ordered_args(function.args) if arg.arg not in ("self", "cls")]
        returned = next(
            (
                statement.value
                for statement in function.body
                if isinstance(statement, ast.Return) and statement.value is not None
            ),
            None,
        )
        if returned is None or not self.is_input_call(returned):
            return
        key = f"{class_name}.{function.name}"
        with contextlib.suppress(SchemaError):
            self.methods[key] = (params, self.parse_input_call(returned, key))

    def resolve_input_reference(self, node: ast.AST) -> InputInfo | None:
        """``resolveInputReference`` (python/inputs.go)."""
        kind = self.source.kind(node)
        if kind == "attribute":
            return self.attributes.get(self.source.content(node))
        if kind != "call" or self.source.kind(node.func) != "attribute":
            return None
        method = self.methods.get(self.source.content(node.func))
        if method is None:
            return None
        params, base = method
        resolved = InputInfo(**vars(base))
        # Positional arguments come first in the source, so a keyword naming the same parameter wins.
        values = dict(zip(params, node.args, strict=False))
        values.update(
            (argument.arg, argument.value) for argument in node.keywords if argument.arg is not None
        )
        literals = self.literals
        for name, value in values.items():
            if name == "default":
                resolved.default = _keep(literals.parse_default_value(value), resolved.default)
            elif name == "description":
                resolved.description = _keep(literals.string_literal(value), resolved.description)
            elif name in ("ge", "le"):
                setattr(resolved, name, _keep(literals.parse_number_literal(value), getattr(resolved, name)))
        return resolved


# isKnownExternalModule (python/models.go): top-level modules the CLI never looks for in the project.
_KNOWN_EXTERNAL = frozenset(
    [
        "builtins",
        "typing",
        "typing_extensions",
        "collections",
        "abc",
        "enum",
        "dataclasses",
        "os",
        "sys",
        "io",
        "json",
        "re",
        "math",
        "pathlib",
        "functools",
        "itertools",
        "contextlib",
        "concurrent",
        "asyncio",
        "multiprocessing",
        "threading",
        "logging",
        "warnings",
        "unittest",
        "pytest",
        "numpy",
        "torch",
        "tensorflow",
        "jax",
        "scipy",
        "sklearn",
        "transformers",
        "diffusers",
        "accelerate",
        "safetensors",
        "PIL",
        "cv2",
        "skimage",
        "requests",
        "httpx",
        "aiohttp",
        "fastapi",
        "flask",
        "pydantic",
        "cog",
    ]
)


def _keep(new, old):
    """An argument the CLI cannot read leaves the field as it was (a later duplicate keyword wins in Go)."""
    return old if new is None else new


def _go_uint64(number: float | None) -> int | None:
    """Go ``uint64(f)``; a negative length is undefined behaviour in Go, so it is not mirrored."""
    if number is None:
        return None
    if number < 0:
        raise NotMirrored("a negative min_length/max_length")
    return int(number)


def _ordered_args(arguments: ast.arguments) -> list[ast.arg]:
    """Parameters in source order, without ``*args``/``**kwargs`` (tree-sitter splat patterns)."""
    return [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]


def _parameters(arguments: ast.arguments) -> Iterator[tuple[ast.arg, ast.AST | None]]:
    """Each parameter with its default, in source order, splats included (with no default)."""
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    yield from zip(positional, defaults, strict=True)
    if arguments.vararg is not None:
        yield arguments.vararg, None
    yield from zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
    if arguments.kwarg is not None:
        yield arguments.kwarg, None


def extract_inputs(file: FileContext, function: ast.FunctionDef, method_name: str) -> dict[str, InputField]:
    """``extractInputs`` (python/inputs.go)."""
    inputs: dict[str, InputField] = {}
    splats = {id(function.args.vararg), id(function.args.kwarg)}
    for param, default in _parameters(function.args):
        if param.annotation is None:
            if default is not None:
                raise SchemaError(
                    ErrorKind.MISSING_TYPE_ANNOTATION,
                    f"parameter '{param.arg}' on {method_name} has no type annotation",
                )
            # A bare name (self, or any other) is no input: the CLI skips it silently.
            continue
        if id(param) in splats:
            raise SchemaError(ErrorKind.PARSE, "typed_parameter has no identifier")
        inputs[param.arg] = _typed_parameter(file, param, default, len(inputs), method_name)
    return inputs


def _typed_parameter(
    file: FileContext, param: ast.arg, default: ast.AST | None, order: int, method_name: str
) -> InputField:
    """``parseTypedParameter`` / ``parseTypedDefaultParameter`` (python/inputs.go)."""
    input_type, field_type = resolve_input_type(
        parse_type_annotation(file.source, param.annotation), file.types
    )
    name = param.arg
    info = InputInfo()
    if default is not None:
        if file.is_input_call(default):
            info = file.parse_input_call(default, name)
        else:
            reference = file.resolve_input_reference(default)
            if reference is not None:
                info = reference
            else:
                value = file.literals.resolve_default_expr(default)
                if value is None:
                    text = file.source.content(default)
                    raise SchemaError(
                        ErrorKind.DEFAULT_NOT_RESOLVABLE,
                        f"parameter '{name}': default `{text}` cannot be statically resolved",
                    )
                info = InputInfo(default=value)
        if info.accept is not None and field_type.primitive not in (Primitive.PATH, Primitive.FILE):
            raise SchemaError(
                ErrorKind.ACCEPT_ON_NON_FILE_TYPE,
                f"accept is only valid on Path or File inputs (parameter '{name}')",
            )
    input_field = InputField(name, order, input_type, field_type, info)
    _validate_input_field(input_field)
    return input_field


def _validate_input_field(input_field: InputField) -> None:
    """``ValidateInputField`` (types.go)."""
    info = input_field.info
    constrained = info.choices or any(
        value is not None for value in (info.ge, info.le, info.min_length, info.max_length, info.regex)
    )
    if input_field.input_type.kind == "union" and constrained:
        raise unsupported_type("constraints and choices are not supported on union inputs")


# -- the target and its output (python/target.go, python/parser.go, python/annotations.go) -------------------


def _find_target(file: FileContext, target: str) -> tuple[ast.FunctionDef, list[str]]:
    """``findTargetCallableNode`` / ``findPredictMethodInClass`` (python/target.go), predict mode."""
    class_node = file.find_class(target)
    if class_node is not None:
        run, predict = _predict_methods(file, class_node, set())
        if run is not None:
            return run, []
        if predict is not None:
            return predict, [f"cog: warning: {target}.predict() is deprecated; use run() instead"]
        raise SchemaError(ErrorKind.METHOD_NOT_FOUND, f"{target} must define run() or predict()")
    functions = {
        statement.name: statement
        for statement in reversed(file.source.module.body)
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for name in (target, "predict"):
        if name in functions:
            return functions[name], []
    raise SchemaError(ErrorKind.PREDICTOR_NOT_FOUND, target)


def _predict_methods(
    file: FileContext, class_node: ast.ClassDef, seen: set[str]
) -> tuple[ast.FunctionDef | None, ast.FunctionDef | None]:
    """``collectPredictMethods`` (python/target.go): run() and predict(), own first, then the parents'."""
    seen.add(class_node.name)
    found: dict[str, ast.FunctionDef] = {}
    for statement in class_node.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef) and statement.name in (
            "run",
            "predict",
        ):
            found[statement.name] = statement
    for base in class_node.bases:
        if file.source.kind(base) not in ("identifier", "attribute"):
            continue
        parent_name = file.source.content(base)
        parent = file.find_class(parent_name)
        if parent is None:
            _refuse_local_parent(file, parent_name)
            continue
        if parent.name in seen:
            continue
        parent_run, parent_predict = _predict_methods(file, parent, seen)
        for name, method in (("run", parent_run), ("predict", parent_predict)):
            if method is not None:
                found.setdefault(name, method)
    return found.get("run"), found.get("predict")


def _refuse_local_parent(file: FileContext, parent: str) -> None:
    """``resolveImportedParentClass`` (python/target.go) reads parents from other files: not ported."""
    alias = parent.split(".")[0]
    entry = file.imports.get(alias)
    if entry is not None and file.is_local_module(entry.module):
        raise NotMirrored(f"a predictor class whose parent '{parent}' comes from another file of the project")


def _decorator_target(file: FileContext, decorator: ast.AST, name: str) -> bool:
    """``expressionIsCogStreaming`` / ``expressionIsCogConcurrent`` (python/annotations.go)."""
    expression = decorator.func if isinstance(decorator, ast.Call) else decorator
    kind = file.source.kind(expression)
    text = file.source.content(expression)
    if kind == "attribute":
        alias, _, attribute = text.partition(".")
        entry = file.imports.get(alias)
        return attribute == name and entry == ImportEntry("cog", "cog")
    if kind == "identifier":
        return file.imports.get(text) == ImportEntry("cog", name)
    return False


def _concurrency_max(file: FileContext, function: ast.FunctionDef) -> int | None:
    """``functionConcurrencyMax`` / ``decoratorCogConcurrentMax`` (python/annotations.go)."""
    for decorator in function.decorator_list:
        if not _decorator_target(file, decorator, "concurrent"):
            continue
        if not isinstance(decorator, ast.Call) or not (decorator.args or decorator.keywords):
            return 1
        arguments = [*decorator.args, *decorator.keywords]
        keyword_argument = arguments[0] if len(arguments) == 1 else None
        if not isinstance(keyword_argument, ast.keyword) or keyword_argument.arg != "max":
            raise unsupported_type_plain("@concurrent only supports literal integer max=... arguments")
        value = file.literals.parse_default_value(keyword_argument.value)
        if value is None or value.kind != "int":
            raise unsupported_type_plain("@concurrent max must be an integer literal")
        if value.value < 1:
            raise unsupported_type_plain("@concurrent max must be at least 1")
        return value.value
    return None


def unsupported_type_plain(message: str) -> SchemaError:
    """``schema.WrapError(schema.ErrUnsupportedType, message, nil)``: the message as it is, no prefix."""
    return SchemaError(ErrorKind.UNSUPPORTED_TYPE, message)


def parse_predictor(path: Path, target: str, source_dir: Path) -> PredictorInfo:
    """``ParseWithOptions`` (python/parser.go), predict mode: the phases in the CLI's order."""
    file = FileContext(path, source_dir)
    function, warnings = _find_target(file, target)
    inputs = extract_inputs(file, function, function.name)
    if function.returns is None:
        raise SchemaError(ErrorKind.MISSING_RETURN_TYPE, function.name)
    output = resolve_schema_type(parse_type_annotation(file.source, function.returns), file.types)
    streaming = any(_decorator_target(file, decorator, "streaming") for decorator in function.decorator_list)
    if streaming and output.kind not in ("iterator", "concat"):
        raise unsupported_type_plain(
            "@streaming requires Iterator[...], AsyncIterator[...], ConcatenateIterator[...] or "
            "AsyncConcatenateIterator[...] return type"
        )
    concurrency = _concurrency_max(file, function)
    if concurrency is not None and concurrency > 1 and not isinstance(function, ast.AsyncFunctionDef):
        raise unsupported_type_plain("@concurrent(max > 1) requires an async run() or predict() method")
    return PredictorInfo(inputs, output, streaming, warnings)
