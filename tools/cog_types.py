"""The types of the Cog CLI's static schema generator, and how it resolves annotations into them.

A Python port of package ``schema`` of replicate/cog (``pkg/schema``, mirrored at commit 6110c912,
v0.22.0-5), the part that knows nothing of Python syntax:

- ``errors.go``: ``SchemaError``, its kinds and the CLI's message texts;
- ``types.go``: primitives, repetitions, ``FieldType``, ``InputType``, ``DefaultValue``, ``ImportContext``,
  ``ResolveInputType`` (inputs) and ``UnwrapOptional``;
- ``schema_type.go``: ``SchemaType`` and ``ResolveSchemaType`` (outputs, including ``BaseModel`` classes).

Two features of the CLI are not ported, because no predictor here uses them: ``Annotated[X, Opaque]``
and ``TypedDict`` types. Meeting either raises ``NotMirrored`` rather than guessing what the CLI would do.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


class ErrorKind(enum.Enum):
    """``SchemaErrorKind`` (errors.go)."""

    PARSE = "ErrParse"
    PREDICTOR_NOT_FOUND = "ErrPredictorNotFound"
    METHOD_NOT_FOUND = "ErrMethodNotFound"
    MISSING_RETURN_TYPE = "ErrMissingReturnType"
    MISSING_TYPE_ANNOTATION = "ErrMissingTypeAnnotation"
    UNSUPPORTED_TYPE = "ErrUnsupportedType"
    DEFAULT_FACTORY_NOT_SUPPORTED = "ErrDefaultFactoryNotSupported"
    OPTIONAL_OUTPUT = "ErrOptionalOutput"
    CONCAT_ITERATOR_NOT_STR = "ErrConcatIteratorNotStr"
    CHOICES_NOT_RESOLVABLE = "ErrChoicesNotResolvable"
    DEFAULT_NOT_RESOLVABLE = "ErrDefaultNotResolvable"
    UNRESOLVABLE_TYPE = "ErrUnresolvableType"
    ACCEPT_ON_NON_FILE_TYPE = "ErrAcceptOnNonFileType"


class SchemaError(Exception):
    """``SchemaError`` (errors.go): the CLI refuses the predictor with exactly ``message``."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class NotMirrored(Exception):
    """The source uses a feature of the CLI's generator that this port does not reproduce."""


def unsupported_type(message: str) -> SchemaError:
    """``errUnsupportedType`` (errors.go) and ``errUnsupported`` (python/annotations.go)."""
    return SchemaError(ErrorKind.UNSUPPORTED_TYPE, f"unsupported type: {message}")


def optional_output() -> SchemaError:
    """``errOptionalOutput`` (errors.go)."""
    return SchemaError(
        ErrorKind.OPTIONAL_OUTPUT, "unsupported output type: Optional is not allowed as a return type"
    )


def unresolvable_imported_type(name: str, module: str) -> SchemaError:
    """``errUnresolvableImportedType`` (errors.go)."""
    return SchemaError(
        ErrorKind.UNRESOLVABLE_TYPE,
        f"cannot resolve type '{name}' (imported from '{module}') - "
        "external types cannot be statically analyzed. "
        "If this is a JSON-shaped third-party type, mark it opaque with "
        "`from typing import Annotated`, `from cog import Opaque`, and "
        f"`field: Annotated[{name}, Opaque]`. "
        "Otherwise define it as a BaseModel subclass in your predict file, or provide a .pyi stub",
    )


def unresolvable_type(name: str) -> SchemaError:
    """``errUnresolvableType`` (errors.go)."""
    return SchemaError(
        ErrorKind.UNRESOLVABLE_TYPE,
        f"cannot resolve type '{name}' - "
        "it is not a primitive type (str, int, float, bool, Path) "
        "and no BaseModel definition was found in the predict file",
    )


# -- primitives and field types (types.go) -------------------------------------------------------------------


class Primitive(enum.Enum):
    """``PrimitiveType`` (types.go); the value is the Python name ``PrimitiveFromName`` accepts."""

    BOOL = "bool"
    FLOAT = "float"
    INTEGER = "int"
    STRING = "str"
    PATH = "Path"
    FILE = "File"
    SECRET = "Secret"
    ANY = "Any"

    def json_type(self) -> dict[str, Any]:
        """``PrimitiveType.JSONType`` (types.go)."""
        return dict(_PRIMITIVE_JSON[self])


_PRIMITIVE_JSON: dict[Primitive, dict[str, Any]] = {
    Primitive.BOOL: {"type": "boolean"},
    Primitive.FLOAT: {"type": "number"},
    Primitive.INTEGER: {"type": "integer"},
    Primitive.STRING: {"type": "string"},
    Primitive.PATH: {"type": "string", "format": "uri"},
    Primitive.FILE: {"type": "string", "format": "uri"},
    Primitive.SECRET: {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
    Primitive.ANY: {"type": "object"},
}


def primitive_from_name(name: str) -> Primitive | None:
    """``PrimitiveFromName`` (types.go)."""
    try:
        return Primitive(name)
    except ValueError:
        return None


class Repetition(enum.Enum):
    """``Repetition`` (types.go)."""

    REQUIRED = 0
    OPTIONAL = 1
    REPEATED = 2
    OPTIONAL_REPEATED = 3


@dataclass(frozen=True)
class FieldType:
    """``FieldType`` (types.go): the legacy flat view the OpenAPI builder still reads."""

    primitive: Primitive
    repetition: Repetition


@dataclass
class InputType:
    """``InputType`` (types.go): kind is ``primitive``, ``any``, ``array`` or ``union``."""

    kind: str
    primitive: Primitive = Primitive.ANY
    elem: InputType | None = None
    variants: list[InputType] = field(default_factory=list)
    nullable: bool = False


def input_primitive(primitive: Primitive) -> InputType:
    """``InputPrimitive`` (types.go)."""
    if primitive is Primitive.ANY:
        return InputType("any")
    return InputType("primitive", primitive)


def field_type_from_input_type(input_type: InputType) -> FieldType:
    """``fieldTypeFromInputType`` (types.go)."""
    repetition = Repetition.OPTIONAL if input_type.nullable else Repetition.REQUIRED
    if input_type.kind == "primitive":
        return FieldType(input_type.primitive, repetition)
    if input_type.kind == "array":
        array_repetition = Repetition.OPTIONAL_REPEATED if input_type.nullable else Repetition.REPEATED
        if input_type.elem is not None and input_type.elem.kind == "primitive":
            return FieldType(input_type.elem.primitive, array_repetition)
        return FieldType(Primitive.ANY, array_repetition)
    return FieldType(Primitive.ANY, repetition)


# -- statically parsed literals (types.go DefaultValue) ------------------------------------------------------


@dataclass(frozen=True)
class DefaultValue:
    """``DefaultValue`` (types.go): kind is none, bool, int, float, str, list, dict or set.

    Dict keys and values stay parallel tuples, as in Go, so duplicate keys of a literal survive.
    """

    kind: str
    value: Any = None
    items: tuple[DefaultValue, ...] = ()
    keys: tuple[DefaultValue, ...] = ()
    values: tuple[DefaultValue, ...] = ()

    def to_json(self) -> Any:
        """``DefaultValue.ToJSON`` (types.go)."""
        if self.kind in ("list", "set"):
            return [item.to_json() for item in self.items]
        if self.kind == "dict":
            return {
                key.value if key.kind == "str" else go_value_text(key.to_json()): value.to_json()
                for key, value in zip(self.keys, self.values, strict=True)
            }
        return self.value


NONE_VALUE = DefaultValue("none")


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-trip digits of ``value`` and its decimal exponent (``d.ddd x 10**exp``)."""
    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, exponent + len(text) - 1


def go_float(value: float, verb: str) -> str:
    """A float64 as Go formats it: verb ``json`` is encoding/json, ``v`` is fmt's ``%v``.

    Both use the shortest round-trip digits; encoding/json switches to exponent form below 1e-6 and from
    1e21 on and trims ``e-07`` to ``e-7``, ``%v`` (strconv ``'g'``, -1) below 1e-4 and from 1e21 on
    (precision 21 for the shortest form).
    """
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"json: unsupported value: {go_value_text(value)}")
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    digits, exponent = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    scientific = exponent < -6 or exponent >= 21 if verb == "json" else exponent < -4 or exponent >= 6
    if scientific:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_sign = "-" if exponent < 0 else "+"
        exp_digits = f"{abs(exponent):02d}" if verb == "v" or exponent >= 0 else str(abs(exponent))
        return f"{sign}{mantissa}e{exp_sign}{exp_digits}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    if len(digits) <= exponent + 1:
        return f"{sign}{digits}{'0' * (exponent + 1 - len(digits))}"
    return f"{sign}{digits[: exponent + 1]}.{digits[exponent + 1 :]}"


def go_value_text(value: Any) -> str:
    """``fmt.Sprintf("%v", value)`` for the scalars a dict literal key can hold."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "+Inf" if value > 0 else "-Inf"
        return go_float(value, "v")
    if isinstance(value, int | str):
        return str(value)
    raise NotMirrored(f"a dict literal key of type {type(value).__name__}")


# -- imports (types.go ImportContext) ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportEntry:
    module: str
    original: str


class ImportContext:
    """``ImportContext`` (types.go): local name -> where it was imported from."""

    def __init__(self) -> None:
        self.names: dict[str, ImportEntry] = {}

    def get(self, name: str) -> ImportEntry | None:
        return self.names.get(name)

    def is_base_model(self, name: str) -> bool:
        entry = self.names.get(name)
        return (
            entry is not None
            and entry.module in ("cog", "pydantic", "pydantic.v1")
            and (entry.original == "BaseModel")
        )

    def is_typed_dict(self, name: str) -> bool:
        entry = self.names.get(name)
        return entry is not None and entry.module in _TYPING and entry.original == "TypedDict"

    def is_opaque(self, name: str) -> bool:
        """``IsOpaque`` (types.go)."""
        resolved = self.resolve_qualified_name(name)
        if resolved is not None:
            return resolved[0] == "Opaque" and resolved[1].module == "cog"
        entry = self.names.get(name)
        return entry is not None and entry.module == "cog" and entry.original == "Opaque"

    def is_annotated(self, name: str) -> bool:
        """``isAnnotated`` (types.go)."""
        resolved = self.resolve_qualified_name(name)
        if resolved is not None:
            resolved_name, entry = resolved
            return resolved_name == "Annotated" and entry.module in _TYPING and entry.original == entry.module
        entry = self.names.get(name)
        return entry is not None and entry.module in _TYPING and entry.original == "Annotated"

    def resolve_qualified_name(self, name: str) -> tuple[str, ImportEntry] | None:
        """``ResolveQualifiedName`` (types.go): ``alias.Type`` -> (``Type``, alias entry); None if not dotted.

        An unknown alias still resolves, with an empty entry, as in Go.
        """
        head, dot, rest = name.partition(".")
        if not dot:
            return None
        return rest, self.names.get(head, _EMPTY_ENTRY)


_TYPING = ("typing", "typing_extensions")
_EMPTY_ENTRY = ImportEntry("", "")


# -- annotations (types.go TypeAnnotation) -------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    """``TypeAnnotation`` (types.go): kind ``simple`` (name), ``generic`` (name[args]) or ``union`` (args)."""

    kind: str
    name: str = ""
    args: tuple[Annotation, ...] = ()


def unwrap_optional(ann: Annotation) -> Annotation | None:
    """``UnwrapOptional`` (types.go): the X of ``Optional[X]``, ``Union[X, None]`` or ``X | None``."""
    if ann.kind == "generic" and ann.name == "Optional" and len(ann.args) == 1:
        return ann.args[0]
    if ((ann.kind == "generic" and ann.name == "Union") or ann.kind == "union") and len(ann.args) == 2:
        for index, arg in enumerate(ann.args):
            if arg.kind == "simple" and arg.name == "None":
                return ann.args[1 - index]
    return None


@dataclass
class TypeScope:
    """What a file knows when resolving annotations: its imports, its local BaseModel classes, and the
    TypedDict class names (kept only to refuse them, see ``NotMirrored``)."""

    imports: ImportContext
    models: dict[str, list[ModelField]] = field(default_factory=dict)
    typed_dicts: set[str] = field(default_factory=set)
    is_local_module: Callable[[str], bool] | None = None

    def refuse_unported(self, ann: Annotation) -> None:
        """Annotated[X, Opaque] and TypedDict are resolved by the CLI in ways this port does not copy."""
        opaque = any(meta.kind == "simple" and self.imports.is_opaque(meta.name) for meta in ann.args[1:])
        if ann.kind == "generic" and opaque and self.imports.is_annotated(ann.name):
            raise NotMirrored("Annotated[X, Opaque] types")
        if ann.kind == "simple" and (
            ann.name in self.typed_dicts or ann.name.rpartition(".")[2] in self.typed_dicts
        ):
            raise NotMirrored("TypedDict types")

    def unresolvable_import(self, name: str, module: str) -> SchemaError:
        """The CLI reads classes imported from the project's own files; this port reads one file only."""
        if self.is_local_module is not None and self.is_local_module(module):
            raise NotMirrored(f"'{name}' imported from the project's module '{module}' (cross-file types)")
        return unresolvable_imported_type(name, module)


# -- input resolution (types.go ResolveInputType) ------------------------------------------------------------


def resolve_input_type(ann: Annotation, scope: TypeScope) -> tuple[InputType, FieldType]:
    """``ResolveInputType`` (types.go)."""
    input_type = _resolve_input(ann, scope)
    return input_type, field_type_from_input_type(input_type)


def _resolve_input(ann: Annotation, scope: TypeScope) -> InputType:
    """``resolveInputType`` (types.go)."""
    scope.refuse_unported(ann)
    imports = scope.imports
    if ann.kind == "simple":
        name = ann.name
        qualified = imports.resolve_qualified_name(name)
        module = ""
        if qualified is not None:
            name, module = qualified[0], qualified[1].module
        if name in ("dict", "Dict"):
            return InputType("any")
        primitive = primitive_from_name(name)
        if primitive is None:
            if module:
                raise scope.unresolvable_import(name, module)
            entry = imports.get(name)
            if entry is not None:
                raise scope.unresolvable_import(name, entry.module)
            raise unsupported_type(name)
        return input_primitive(primitive)

    if ann.kind == "generic":
        outer = ann.name
        qualified = imports.resolve_qualified_name(outer)
        if qualified is not None:
            outer = qualified[0]
        if outer in ("dict", "Dict"):
            return InputType("any")
        if outer == "Optional":
            if len(ann.args) != 1:
                raise unsupported_type(f"Optional expects exactly 1 type argument, got {len(ann.args)}")
            inner = _resolve_input(ann.args[0], scope)
            inner.nullable = True
            return inner
        if outer == "Union":
            return _resolve_input_union(ann.args, scope)
        if imports.is_annotated(ann.name):
            return _resolve_input(ann.args[0], scope)
        if outer in ("List", "list"):
            if len(ann.args) != 1:
                raise unsupported_type(f"List expects exactly 1 type argument, got {len(ann.args)}")
            inner = _resolve_input(ann.args[0], scope)
            if inner.nullable or inner.kind in ("array", "union"):
                raise unsupported_type("nested generics like List[Optional[X]] are not supported")
            return InputType("array", elem=inner)
        raise unsupported_type(f"{outer}[...] is not a supported input type")

    return _resolve_input_union(ann.args, scope)


def _resolve_input_union(args: tuple[Annotation, ...], scope: TypeScope) -> InputType:
    """``resolveInputUnion`` and ``validateUnionVariant`` (types.go)."""
    variants: list[InputType] = []
    nullable = False
    for arg in args:
        if arg.kind == "simple" and arg.name == "None":
            nullable = True
            continue
        if arg.kind == "union" or (arg.kind == "generic" and arg.name == "Union"):
            raise unsupported_type("nested union inputs are not supported")
        variant = _resolve_input(arg, scope)
        if variant.kind == "union":
            raise unsupported_type("nested union inputs are not supported")
        variants.append(variant)
    if not variants:
        raise unsupported_type("union inputs must include at least one non-None type")
    if len(variants) == 1:
        variant = variants[0]
        variant.nullable = variant.nullable or nullable
        return variant
    for variant in variants:
        _validate_union_variant(variant)
    return InputType("union", variants=variants, nullable=nullable)


def _validate_union_variant(variant: InputType) -> None:
    if variant.nullable:
        raise unsupported_type("nested nullable variants are not supported in union inputs")
    if variant.kind == "primitive" and variant.primitive in (
        Primitive.PATH,
        Primitive.FILE,
        Primitive.SECRET,
    ):
        raise unsupported_type(f"{variant.primitive.value} is not supported in union inputs")
    if variant.kind == "array" and variant.elem is not None:
        _validate_union_variant(variant.elem)


def input_type_json(input_type: InputType) -> dict[str, Any]:
    """``inputTypeJSONSchema`` (openapi_spec.go)."""
    if input_type.kind == "primitive":
        schema = input_type.primitive.json_type()
    elif input_type.kind == "array":
        items = input_type_json(input_type.elem) if input_type.elem is not None else Primitive.ANY.json_type()
        schema = {"type": "array", "items": items}
    elif input_type.kind == "union":
        variants = []
        for variant in input_type.variants:
            variant_schema = input_type_json(variant)
            if input_type.nullable:
                variant_schema["nullable"] = True
            variants.append(variant_schema)
        schema = {"anyOf": variants}
    else:
        schema = Primitive.ANY.json_type()
    if input_type.nullable:
        schema["nullable"] = True
    return schema


# -- outputs (schema_type.go) --------------------------------------------------------------------------------


@dataclass
class ModelField:
    """``ModelField`` (types.go): one annotated field of a BaseModel class."""

    name: str
    type: Annotation
    default: DefaultValue | None


@dataclass
class SchemaType:
    """``SchemaType`` (schema_type.go): kind is primitive, any, array, dict, object, iterator or concat."""

    kind: str
    primitive: Primitive = Primitive.ANY
    inner: SchemaType | None = None
    fields: dict[str, tuple[SchemaType, bool]] | None = None
    nullable: bool = False

    def json_schema(self, top_level: bool = True) -> dict[str, Any]:
        """``SchemaType.JSONSchema`` / ``jsonSchema`` (schema_type.go)."""
        result = self._core()
        if top_level:
            result["title"] = "Output"
        if self.nullable:
            result["nullable"] = True
        return result

    def _core(self) -> dict[str, Any]:
        """``coreSchema`` (schema_type.go)."""
        items = self.inner.json_schema(False) if self.inner is not None else {"type": "object"}
        if self.kind == "primitive":
            return self.primitive.json_type()
        if self.kind == "array":
            return {"type": "array", "items": items}
        if self.kind == "dict":
            result: dict[str, Any] = {"type": "object"}
            if self.inner is not None:
                result["additionalProperties"] = items
            return result
        if self.kind == "object" and self.fields is not None:
            properties = OrderedMap()
            required = []
            for name, (field_type, is_required) in self.fields.items():
                prop = field_type.json_schema(False)
                prop["title"] = title_case(name)
                if is_required:
                    required.append(name)
                properties[name] = prop
            result = {"type": "object", "properties": properties}
            if required:
                result["required"] = required
            return result
        if self.kind == "iterator":
            return {"type": "array", "items": items, "x-cog-array-type": "iterator"}
        if self.kind == "concat":
            return {
                "type": "array",
                "items": items,
                "x-cog-array-type": "iterator",
                "x-cog-array-display": "concatenate",
            }
        return {"type": "object"}


class OrderedMap(dict):
    """A JSON object the CLI writes in insertion order (``orderedMapAny``); plain dicts are written with
    sorted keys, as Go's encoding/json writes a ``map[string]any``."""


def title_case(name: str) -> str:
    """``TitleCase`` (types.go): snake_case -> Title Case, upper-casing only each part's first letter."""
    return " ".join(part[:1].upper() + part[1:] for part in name.split("_"))


def resolve_schema_type(ann: Annotation, scope: TypeScope, seen: frozenset[str] = frozenset()) -> SchemaType:
    """``ResolveSchemaType`` / ``resolveSchemaType`` (schema_type.go)."""
    scope.refuse_unported(ann)
    if ann.kind == "generic" and scope.imports.is_annotated(ann.name):
        return resolve_schema_type(ann.args[0], scope, seen)
    if ann.kind == "simple":
        return _resolve_simple_schema(ann, scope, seen)
    if ann.kind == "generic":
        return _resolve_generic_schema(ann, scope, seen)
    return _resolve_union_schema(ann)


def _resolve_simple_schema(ann: Annotation, scope: TypeScope, seen: frozenset[str]) -> SchemaType:
    """``resolveSimpleSchemaType`` (schema_type.go)."""
    name = ann.name
    if name in scope.models:
        return _resolve_model(name, scope, seen)
    qualified = scope.imports.resolve_qualified_name(name)
    module = ""
    if qualified is not None:
        name, module = qualified[0], qualified[1].module
    elif name in scope.models:
        return _resolve_model(name, scope, seen)
    if name in ("Any", "dict", "Dict"):
        return SchemaType("any")
    if _list_container(ann.name, scope.imports) in ("list", "List"):
        return SchemaType("array", inner=SchemaType("any"))
    primitive = primitive_from_name(name)
    if primitive is None:
        if module:
            raise scope.unresolvable_import(name, module)
        entry = scope.imports.get(name)
        if entry is not None:
            raise scope.unresolvable_import(name, entry.module)
        raise unresolvable_type(name)
    return SchemaType("primitive", primitive)


def _resolve_model(name: str, scope: TypeScope, seen: frozenset[str]) -> SchemaType:
    """``resolveNamedModelToSchemaType`` and ``resolveModelToSchemaType`` (schema_type.go)."""
    if name in seen:
        return SchemaType("any")
    fields: dict[str, tuple[SchemaType, bool]] = {}
    for model_field in scope.models[name]:
        try:
            field_type, required = _resolve_field_schema(model_field.type, scope, seen | {name})
        except SchemaError as error:
            raise SchemaError(error.kind, f'field "{model_field.name}": {error.message}') from None
        fields[model_field.name] = (field_type, required and model_field.default is None)
    return SchemaType("object", fields=fields)


def _resolve_field_schema(ann: Annotation, scope: TypeScope, seen: frozenset[str]) -> tuple[SchemaType, bool]:
    """``resolveFieldSchemaType`` (schema_type.go): a model field may be Optional (nullable, not required)."""
    scope.refuse_unported(ann)
    if ann.kind == "generic" and scope.imports.is_annotated(ann.name):
        return _resolve_field_schema(ann.args[0], scope, seen)
    inner = _unwrap_field_optional(ann, scope.imports)
    if inner is not None:
        field_type = resolve_schema_type(inner, scope, seen)
        field_type.nullable = True
        return field_type, False
    return resolve_schema_type(ann, scope, seen), True


def _unwrap_field_optional(ann: Annotation, imports: ImportContext) -> Annotation | None:
    """``unwrapFieldOptional`` / ``unwrapOpaqueOptional`` (schema_type.go, types.go)."""
    if ann.kind == "generic":
        name = _typing_container(ann.name, imports)
        if name == "Optional" and len(ann.args) == 1:
            return ann.args[0]
        if name == "Union" and len(ann.args) == 2:
            for index, arg in enumerate(ann.args):
                if arg.kind == "simple" and arg.name == "None":
                    return ann.args[1 - index]
    return unwrap_optional(ann)


def _typing_container(name: str, imports: ImportContext) -> str | None:
    """``opaqueContainerName`` (types.go): List/Optional/Union from typing, or the builtin list."""
    qualified = imports.resolve_qualified_name(name)
    if qualified is not None:
        resolved, entry = qualified
        if (
            entry.module in _TYPING
            and entry.original == entry.module
            and resolved in ("List", "Optional", "Union")
        ):
            return resolved
        return None
    entry = imports.get(name)
    if entry is not None:
        if entry.module == "builtins" and entry.original == "list":
            return "list"
        if entry.module in _TYPING and entry.original in ("List", "Optional", "Union"):
            return entry.original
        return None
    return "list" if name == "list" else None


def _list_container(name: str, imports: ImportContext) -> str | None:
    container = _typing_container(name, imports)
    return container if container in ("list", "List") else None


def _resolve_generic_schema(ann: Annotation, scope: TypeScope, seen: frozenset[str]) -> SchemaType:
    """``resolveGenericSchemaType`` (schema_type.go)."""
    outer = ann.name
    qualified = scope.imports.resolve_qualified_name(outer)
    if qualified is not None:
        outer = qualified[0]
    if outer in ("dict", "Dict"):
        if len(ann.args) == 2:
            try:
                return SchemaType("dict", inner=resolve_schema_type(ann.args[1], scope, seen))
            except SchemaError as error:
                raise SchemaError(error.kind, f"resolving dict value type: {error.message}") from None
        raise unsupported_type("dict expects 0 or 2 type arguments")
    if outer == "Optional":
        if len(ann.args) != 1:
            raise unsupported_type("Optional expects exactly 1 type argument")
        raise optional_output()
    if outer == "Union":
        return _resolve_union_schema(Annotation("union", args=ann.args))
    if _list_container(ann.name, scope.imports):
        if len(ann.args) != 1:
            raise unsupported_type("list expects exactly 1 type argument")
        return SchemaType("array", inner=resolve_schema_type(ann.args[0], scope, seen))
    if outer in ("Iterator", "AsyncIterator"):
        if len(ann.args) != 1:
            raise unsupported_type("Iterator expects exactly 1 type argument")
        return SchemaType("iterator", inner=resolve_schema_type(ann.args[0], scope, seen))
    if outer in ("ConcatenateIterator", "AsyncConcatenateIterator"):
        if len(ann.args) != 1:
            raise unsupported_type("ConcatenateIterator expects exactly 1 type argument")
        inner = ann.args[0]
        if inner.kind != "simple":
            raise unsupported_type("ConcatenateIterator element type must be a simple type")
        if primitive_from_name(inner.name) is not Primitive.STRING:
            raise SchemaError(
                ErrorKind.CONCAT_ITERATOR_NOT_STR,
                f"ConcatenateIterator element type must be str, got {inner.name}",
            )
        return SchemaType("concat", inner=SchemaType("primitive", Primitive.STRING))
    raise unsupported_type(f"{outer}[...] is not a supported output type")


def _resolve_union_schema(ann: Annotation) -> SchemaType:
    """``resolveUnionSchemaType`` (schema_type.go)."""
    if unwrap_optional(ann) is not None:
        raise optional_output()
    raise unsupported_type("union types are not supported as output")
