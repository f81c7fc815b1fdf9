"""MkDocs hook: the HTTP API reference, generated from the app's OpenAPI document at build time.

``docs/reference/api.md`` holds the prose and the marker ``<!-- openapi-reference -->``; this
hook replaces the marker with every operation of the document the Flask app serves at
``/openapi.json`` (:func:`api.openapi_export.openapi_document`, the same function that writes
``api/openapi.json``): grouped by tag, each with its parameters, request body, responses and
status codes, then every schema of ``components``. Nothing is fetched: the document is built
in-process from the code, so the build works offline.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from pathlib import Path
from typing import Any

from mdtext import cell

MARKER = "<!-- openapi-reference -->"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
#: Enumerations longer than this are shortened to their first and last values.
MAX_ENUM = 8


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker, where a page has it, with the generated reference."""
    del page, files
    if MARKER not in markdown:
        return markdown
    root = Path(config["config_file_path"]).resolve().parent
    return markdown.replace(MARKER, render(_document(root)))


@functools.cache
def _document(root: Path) -> dict[str, Any]:
    """The Flask app's OpenAPI document, built with the repository as working directory."""
    # pylint: disable-next=import-outside-toplevel
    from api.openapi_export import openapi_document

    with contextlib.chdir(root):  # the settings read config/*.yaml from here
        return openapi_document()


def render(document: dict[str, Any]) -> str:
    """The document as Markdown: an index, one section per tag, then the schemas."""
    operations = [
        (path, method, operation, item.get("parameters", []))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]
    tags = [tag["name"] for tag in document.get("tags", [])]
    tags += sorted({t for *_, op, _ in operations for t in op.get("tags", [])} - set(tags))
    described = {tag["name"]: tag.get("description", "") for tag in document.get("tags", [])}
    out = [
        f"Generated from the OpenAPI {document.get('openapi', '')} document of "
        f"**{document['info']['title']}** (version {document['info']['version']}).\n",
        "| method | path | what it does |",
        "|---|---|---|",
    ]
    for path, method, operation, _ in operations:
        link = f"[`{path}`](#{_anchor(method, path)})"
        out.append(f"| `{method.upper()}` | {link} | {_cell(operation.get('summary'))} |")
    out.append("")
    for tag in tags + [""]:
        mine = [o for o in operations if (o[2].get("tags") or [""])[0] == tag]
        if not mine:
            continue
        out.append(f"## {tag or 'other'}\n")
        if described.get(tag):
            out.append(_cell(described[tag]) + ".\n")
        for path, method, operation, shared in mine:
            out.extend(_operation(document, path, method, operation, shared))
    schemas = document.get("components", {}).get("schemas", {})
    if schemas:
        out.append("## Schemas\n")
        for name, schema in schemas.items():
            out.extend(_schema(name, schema))
    schemes = document.get("components", {}).get("securitySchemes", {})
    if schemes:
        out.append("## Authentication\n")
        for name, scheme in schemes.items():
            kind = " ".join(str(scheme.get(k, "")) for k in ("type", "scheme")).strip()
            how = (
                " Send `Authorization: Bearer <token>`." if scheme.get("scheme") == "bearer" else ""
            )
            out.append(f"- `{name}`: {kind}.{how}")
        out.append("")
    return "\n".join(out)


def _operation(
    document: dict[str, Any],
    path: str,
    method: str,
    operation: dict[str, Any],
    shared: list[dict[str, Any]],
) -> list[str]:
    out = [f"### `{method.upper()} {path}` {{ #{_anchor(method, path)} }}\n"]
    for key in ("summary", "description"):
        if operation.get(key):
            out.append(_cell(operation[key]) + "\n")
    if operation.get("security"):
        names = sorted({name for entry in operation["security"] for name in entry})
        out.append("**Authentication:** " + ", ".join(f"`{n}`" for n in names) + ".\n")
    parameters = [_resolve(document, p) for p in [*shared, *operation.get("parameters", [])]]
    if parameters:
        out.append("**Parameters**\n")
        out.append("| name | in | type | required | description |")
        out.append("|---|---|---|---|---|")
        for parameter in parameters:
            schema = parameter.get("schema", {})
            out.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_type(schema)} | "
                f"{'yes' if parameter.get('required') else 'no'} | "
                f"{_cell(parameter.get('description'))} |"
            )
        out.append("")
    body = operation.get("requestBody")
    if body:
        body = _resolve(document, body)
        required = "required" if body.get("required") else "optional"
        for media, content in body.get("content", {}).items():
            out.append(
                f"**Request body** ({required}, `{media}`): {_type(content.get('schema'))}\n"
            )
            if "example" in content:
                example = json.dumps(content["example"], indent=2)
                out.append('??? example "Example body"\n')
                out.append("    ```json\n" + _indent(example, 4) + "\n    ```\n")
    out.append("**Responses**\n")
    out.append("| status | meaning | body |")
    out.append("|---|---|---|")
    for status in sorted(operation.get("responses", {}), key=_status_order):
        response = _resolve(document, operation["responses"][status])
        content = response.get("content", {})
        bodies = ", ".join(f"{_type(c.get('schema'))} (`{m}`)" for m, c in content.items())
        out.append(f"| `{status}` | {_cell(response.get('description'))} | {bodies or '—'} |")
    out.append("")
    return out


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    out = [f"### `{name}` {{ #{_schema_anchor(name)} }}\n"]
    if schema.get("description"):
        out.append(_cell(schema["description"]) + "\n")
    properties = schema.get("properties", {})
    if not properties:
        return [*out, f"Type: {_type(schema)}.\n"]
    required = set(schema.get("required", []))
    out.append("| field | type | required | description |")
    out.append("|---|---|---|---|")
    for field, spec in properties.items():
        out.append(
            f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} | "
            f"{_cell(spec.get('description'))} |"
        )
    if schema.get("additionalProperties") is False:
        out.append("\nNo other field is accepted.")
    out.append("")
    return out


def _type(schema: dict[str, Any] | None) -> str:
    """A schema in a few words: its type or linked component, then its constraints."""
    if not schema:
        return "—"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#{_schema_anchor(name)})"
    for combiner in ("oneOf", "anyOf", "allOf"):
        if combiner in schema:
            return " or ".join(_type(s) for s in schema[combiner])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        kind = f"array of {_type(schema.get('items'))}"
    if schema.get("format"):
        kind += f" ({schema['format']})"
    notes = []
    if "enum" in schema:
        values = [f"`{v}`" for v in schema["enum"]]
        if len(values) > MAX_ENUM:
            values = [*values[:3], "…", values[-1], f"({len(values)} values)"]
        notes.append("one of " + ", ".join(values))
    bounds = (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
    )
    notes += [f"{sign} {schema[key]}" for key, sign in bounds if key in schema]
    if "pattern" in schema:
        notes.append(f"pattern `{schema['pattern']}`")
    if "default" in schema:
        notes.append(f"default `{json.dumps(schema['default'])}`")
    if schema.get("nullable"):
        notes.append("may be null")
    return _cell(kind + (f"; {'; '.join(notes)}" if notes else ""))


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/components/...``) to what it names."""
    while "$ref" in node and node["$ref"].startswith("#/"):
        target: Any = document
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def _status_order(status: str) -> tuple[int, str]:
    return (0, status) if status.isdigit() else (1, status)


def _anchor(method: str, path: str) -> str:
    return f"{method}-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root")


def _schema_anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _cell(text: str | None) -> str:
    return cell(str(text)) if text else "—"
