"""Consistency of the Kibana saved objects (monitoring/kibana) with what Elasticsearch holds,
checked from the files alone since no Kibana runs here.

Every saved object parses; every reference resolves (to an object of the files); every field a
Lens visualisation uses (columns, sort fields, KQL queries and filters, the queries of a
``filters`` bucket column, and the fields and ``kql=`` queries written in a formula) exists in the
mapping of the index template whose patterns the data view's title matches
(monitoring/elasticsearch, with its component templates), or in the documented Metricbeat field
list for Metricbeat's indices, and has a type the operation accepts; the helper columns a formula
or math column references exist; each event index family has a data view; the five dashboards
exist. Each check is also run on a broken copy, where it must fail.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.monitoring.mapping_check import template_for
from xgbops.monitoring import MonitoringError
from xgbops.monitoring.kibana import load_saved_objects

REPO = Path(__file__).resolve().parents[2]
KIBANA_DIR = REPO / "monitoring" / "kibana"
ES_DIR = REPO / "monitoring" / "elasticsearch"
METRICBEAT_FIELDS = "metricbeat-fields.json"
DASHBOARDS = {"Models", "Predictions", "Drift", "Rollout", "System & containers"}

NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float"}
NUMERIC |= {"unsigned_long"}
KEYWORD = {"keyword", "constant_keyword", "flattened"}
#: An Elasticsearch ``histogram`` field (Metricbeat's prometheus.<metric>.histogram): Lens' metric
#: operations and percentiles take it (``supportedTypes = ['number', 'histogram']`` in Kibana's
#: Lens operation definitions), bucket operations and counts do not.
HISTOGRAM = {"histogram"}
#: Field types each Lens operation accepts (Lens' own field filters, for the types we map).
OPERATION_FIELD_TYPES = {
    "date_histogram": {"date"},
    "average": NUMERIC | HISTOGRAM,
    "sum": NUMERIC | HISTOGRAM,
    "min": NUMERIC | HISTOGRAM,
    "max": NUMERIC | HISTOGRAM,
    "median": NUMERIC | HISTOGRAM,
    "percentile": NUMERIC | HISTOGRAM,
    "percentile_rank": NUMERIC | HISTOGRAM,
    "standard_deviation": NUMERIC | HISTOGRAM,
    "terms": KEYWORD | NUMERIC | {"ip", "boolean"},
    "unique_count": KEYWORD | NUMERIC | {"ip", "boolean", "date"},
    "last_value": KEYWORD | NUMERIC | {"ip", "boolean", "date"},
    "count": KEYWORD | NUMERIC | {"ip", "boolean", "date"},
}
#: The column dataType Lens gives a field of each type.
DATA_TYPES = {
    "number": NUMERIC | HISTOGRAM,
    "string": KEYWORD | {"ip"},
    "date": {"date"},
    "boolean": {"boolean"},
}
#: Operations without a source field (``filters`` buckets by its KQL queries, checked apart).
FIELDLESS = {"static_value", "formula", "math", "time_range", "cumulative_sum", "differences"}
FIELDLESS |= {"moving_average", "counter_rate", "overall_sum", "overall_average", "filters"}
_KQL_FIELD = re.compile(r"(?<![\w.@\"'*])([A-Za-z_@][\w.@]*)\s*:")
#: In a formula: ``kql='...'`` / ``lucene='...'`` arguments, and ``operation(field`` calls.
_FORMULA_QUERY = re.compile(r"\b(?:kql|lucene)\s*=\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
_FORMULA_CALL = re.compile(r"\b([a-z_]+)\(\s*([A-Za-z_@][\w.@]*)\s*[,)]")
_LAYER_REF = "indexpattern-datasource-layer-"


@dataclass(frozen=True)
class Sources:
    """Where the checks read from: the saved objects and the Elasticsearch templates."""

    kibana: Path = KIBANA_DIR
    elasticsearch: Path = ES_DIR

    def objects(self) -> list[dict[str, Any]]:
        """The saved objects, parsed (and validated) by the importer's own reader."""
        return load_saved_objects(self.kibana)


@dataclass(frozen=True)
class LensState:
    """A Lens visualisation, saved alone or by value in a dashboard panel."""

    owner: str
    state: dict[str, Any]
    layer_views: dict[str, str | None]  # layer id -> data view id (None: no reference)


# --- reading ----------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    content = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(content, dict), path
    return content


def _flatten(properties: dict[str, Any], prefix: str = "") -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            fields.update(_flatten(spec["properties"], f"{path}."))
        fields[path] = spec.get("type", "object")
    return fields


def template_fields(es_dir: Path) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Each index template's body and its fields (component templates' mappings merged in)."""
    components = {
        p.stem: _read_json(p).get("template", {}).get("mappings", {}).get("properties", {})
        for p in sorted((es_dir / "component_templates").glob("*.json"))
    }
    templates = {}
    for path in sorted((es_dir / "index_templates").glob("*.json")):
        body = _read_json(path)
        properties: dict[str, Any] = {}
        for name in body.get("composed_of", []):
            assert name in components, f"{path.name}: unknown component template {name}"
            properties.update(components[name])
        properties.update(body.get("template", {}).get("mappings", {}).get("properties", {}))
        templates[path.stem] = (body, _flatten(properties))
    return templates


def view_fields(title: str, sources: Sources) -> dict[str, str] | None:
    """Field -> type for the indices a data view's title targets; None when nothing maps them.

    A title may list several patterns (``a-*,b-*``): a field must exist in all of them.
    """
    templates = template_fields(sources.elasticsearch)
    bodies = {name: body for name, (body, _) in templates.items()}
    metricbeat = _read_json(sources.kibana / METRICBEAT_FIELDS)
    found: list[dict[str, str]] = []
    for pattern in (part.strip() for part in title.split(",")):
        body = template_for(pattern.replace("*", "x"), bodies)
        if body is not None:
            name = next(n for n, b in bodies.items() if b is body)
            found.append(templates[name][1])
        elif pattern in metricbeat["index_patterns"]:
            found.append(dict(metricbeat["fields"]))
        else:
            return None
    common = set.intersection(*(set(f) for f in found)) if found else set()
    return {name: found[0][name] for name in common}


def _field_type(fields: dict[str, str], name: str) -> str | None:
    if name in fields:
        return fields[name]
    parent = name.rsplit(".", 1)[0] if "." in name else None
    while parent:  # a key inside a flattened field is a keyword
        if fields.get(parent) == "flattened":
            return "keyword"
        parent = parent.rsplit(".", 1)[0] if "." in parent else None
    return None


def lens_states(objects: list[dict[str, Any]]) -> Iterator[LensState]:
    """Every Lens state: saved ``lens`` objects and by-value ``lens`` dashboard panels."""
    for obj in objects:
        if obj["type"] == "lens":
            refs = {r["name"]: r["id"] for r in obj.get("references", [])}
            yield _lens_state(f"lens/{obj['id']}", obj["attributes"]["state"], refs)
        elif obj["type"] == "dashboard":
            outer = {r["name"]: r["id"] for r in obj.get("references", [])}
            for panel in json.loads(obj["attributes"].get("panelsJSON") or "[]"):
                attributes = panel.get("embeddableConfig", {}).get("attributes")
                if panel.get("type") != "lens" or not attributes:
                    continue
                index = panel.get("panelIndex")
                refs = {r["name"]: r["id"] for r in attributes.get("references", [])}
                refs.update(
                    {k.split(":", 1)[1]: v for k, v in outer.items() if k.startswith(f"{index}:")}
                )
                yield _lens_state(f"dashboard/{obj['id']} panel {index}", attributes["state"], refs)


def _lens_state(owner: str, state: dict[str, Any], refs: dict[str, str]) -> LensState:
    layers = state.get("datasourceStates", {}).get("formBased", {}).get("layers", {})
    return LensState(owner, state, {lid: refs.get(f"{_LAYER_REF}{lid}") for lid in layers})


def kql_fields(query: Any) -> list[str]:
    """Field names a KQL/Lucene query names (``field : value``), if it is one."""
    if not isinstance(query, dict) or not isinstance(query.get("query"), str):
        return []
    return _KQL_FIELD.findall(query["query"])


def formula_fields(formula: str) -> tuple[list[tuple[str, str]], list[str]]:
    """A Lens formula's ``(operation, field)`` calls and the fields its ``kql=`` queries name.

    Lens saves a formula with helper columns (checked as columns), but re-parses the text when
    the panel is edited: the text must name the same, existing fields.
    """
    queries = [m.group(1)[1:-1] for m in _FORMULA_QUERY.finditer(formula)]
    calls = [
        (operation, field)
        for operation, field in _FORMULA_CALL.findall(_FORMULA_QUERY.sub("", formula))
        if operation in OPERATION_FIELD_TYPES
    ]
    return calls, [name for q in queries for name in kql_fields({"query": q})]


# --- checks -----------------------------------------------------------------------------------
def reference_problems(objects: list[dict[str, Any]]) -> list[str]:
    """References that point nowhere, panels without their reference, duplicate objects."""
    problems = []
    keys = [(o["type"], o["id"]) for o in objects]
    problems += [f"{t}/{i}: defined twice" for t, i in sorted(set(keys)) if keys.count((t, i)) > 1]
    known = set(keys)
    for obj in objects:
        owner = f"{obj['type']}/{obj['id']}"
        for ref in obj.get("references", []):
            if (ref.get("type"), ref.get("id")) not in known:
                problems.append(
                    f"{owner}: reference {ref.get('name')} -> "
                    f"{ref.get('type')}/{ref.get('id')} not defined"
                )
        names = {r.get("name") for r in obj.get("references", [])}
        if obj["type"] == "dashboard":
            for panel in json.loads(obj["attributes"].get("panelsJSON") or "[]"):
                ref_name = panel.get("panelRefName")
                if ref_name and f"{panel.get('panelIndex')}:{ref_name}" not in names:
                    problems.append(
                        f"{owner}: panel {panel.get('panelIndex')} has no reference {ref_name}"
                    )
                if not ref_name and not panel.get("embeddableConfig", {}).get("attributes"):
                    problems.append(
                        f"{owner}: panel {panel.get('panelIndex')} is neither by value "
                        "nor by reference"
                    )
    for lens in lens_states(objects):
        problems += [
            f"{lens.owner}: layer {layer} has no data view reference"
            for layer, view in lens.layer_views.items()
            if view is None
        ]
    return problems


def field_problems(objects: list[dict[str, Any]], sources: Sources) -> list[str]:
    """Fields missing from the mappings, operations on the wrong type, dangling accessors."""
    views = {o["id"]: o["attributes"] for o in objects if o["type"] == "index-pattern"}
    problems = []
    for lens in lens_states(objects):
        layers = lens.state.get("datasourceStates", {}).get("formBased", {}).get("layers", {})
        query_fields = kql_fields(lens.state.get("query"))
        query_fields += [
            f["meta"]["key"] for f in lens.state.get("filters", []) if f.get("meta", {}).get("key")
        ]
        for layer_id, layer in layers.items():
            view = views.get(lens.layer_views.get(layer_id) or "")
            where = f"{lens.owner} layer {layer_id}"
            if view is None:
                continue  # reported by reference_problems
            fields = view_fields(view["title"], sources)
            if fields is None:
                problems.append(
                    f"{where}: no index template or documented field list for {view['title']!r}"
                )
                continue
            for name in query_fields:
                if _field_type(fields, name) is None:
                    problems.append(
                        f"{where}: query field {name!r} not in the mapping of {view['title']}"
                    )
            problems += _column_problems(where, layer, fields, view["title"])
        problems += [f"{lens.owner}: {p}" for p in _accessor_problems(lens.state, layers)]
    return problems


def _column_problems(
    where: str, layer: dict[str, Any], fields: dict[str, str], title: str
) -> list[str]:
    problems = []
    columns = layer.get("columns", {})
    if sorted(layer.get("columnOrder", [])) != sorted(columns):
        problems.append(f"{where}: columnOrder does not list exactly its columns")
    for column_id, column in columns.items():
        operation = column.get("operationType")
        at = f"{where} column {column_id} ({operation})"
        for name in kql_fields(column.get("filter")):
            if _field_type(fields, name) is None:
                problems.append(f"{at}: filter field {name!r} not in the mapping of {title}")
        problems += [
            f"{at}: references {ref!r}, which the layer does not have"
            for ref in column.get("references", [])
            if ref not in columns
        ]
        if operation == "filters":
            for bucket in column.get("params", {}).get("filters", []):
                for name in kql_fields(bucket.get("input")):
                    if _field_type(fields, name) is None:
                        problems.append(
                            f"{at}: filters field {name!r} not in the mapping of {title}"
                        )
        if operation == "formula":
            problems += _formula_problems(at, column, fields, title)
        if operation in FIELDLESS:
            continue
        source = column.get("sourceField")
        if operation == "count" and source == "___records___":
            continue
        kind = _field_type(fields, source or "")
        if kind is None:
            problems.append(f"{at}: field {source!r} not in the mapping of {title}")
            continue
        if kind not in OPERATION_FIELD_TYPES.get(operation, set()):
            problems.append(f"{at}: {operation} cannot use {source!r} of type {kind}")
        if operation not in ("count", "unique_count") and kind not in DATA_TYPES.get(
            column.get("dataType"), set()
        ):
            problems.append(
                f"{at}: dataType {column.get('dataType')!r} does not fit {source!r} ({kind})"
            )
        sort_field = column.get("params", {}).get("sortField")
        if sort_field and _field_type(fields, sort_field) != "date":
            problems.append(f"{at}: sort field {sort_field!r} is not a date of {title}")
        order = column.get("params", {}).get("orderBy", {})
        if order.get("type") == "column" and order.get("columnId") not in columns:
            problems.append(f"{at}: ordered by a missing column {order.get('columnId')!r}")
    return problems


def _formula_problems(
    at: str, column: dict[str, Any], fields: dict[str, str], title: str
) -> list[str]:
    calls, query_fields = formula_fields(column.get("params", {}).get("formula") or "")
    problems = [
        f"{at}: formula query field {name!r} not in the mapping of {title}"
        for name in query_fields
        if _field_type(fields, name) is None
    ]
    for operation, source in calls:
        kind = _field_type(fields, source)
        if kind is None:
            problems.append(f"{at}: formula field {source!r} not in the mapping of {title}")
        elif kind not in OPERATION_FIELD_TYPES[operation]:
            problems.append(f"{at}: formula {operation} cannot use {source!r} of type {kind}")
    return problems


def _accessor_problems(state: dict[str, Any], layers: dict[str, Any]) -> list[str]:
    """Columns the visualisation shows must exist in the layer it names."""
    vis = state.get("visualization", {})
    wanted: list[tuple[str | None, str | None]] = []
    for entry in vis.get("layers", [vis]):
        layer = entry.get("layerId")
        for key in ("xAccessor", "splitAccessor", "metricAccessor"):
            if entry.get(key):
                wanted.append((layer, entry[key]))
        wanted += [(layer, a) for a in entry.get("accessors", [])]
        wanted += [(layer, c.get("columnId")) for c in entry.get("columns", [])]
    return [
        f"visualisation shows {column!r} of layer {layer!r}, which has no such column"
        for layer, column in wanted
        if column not in layers.get(layer or "", {}).get("columns", {})
    ]


def data_view_problems(objects: list[dict[str, Any]], sources: Sources) -> list[str]:
    """Each data view maps to indices with a date time field; each index family has a view."""
    views = [o for o in objects if o["type"] == "index-pattern"]
    problems = []
    for view in views:
        attributes = view["attributes"]
        fields = view_fields(attributes.get("title", ""), sources)
        if fields is None:
            problems.append(
                f"index-pattern/{view['id']}: {attributes.get('title')!r} targets no known mapping"
            )
        elif fields.get(attributes.get("timeFieldName", "")) != "date":
            problems.append(
                f"index-pattern/{view['id']}: time field "
                f"{attributes.get('timeFieldName')!r} is not a date"
            )
    titles = [p.strip() for v in views for p in v["attributes"].get("title", "").split(",")]
    for body, _ in template_fields(sources.elasticsearch).values():
        for pattern in body["index_patterns"]:
            if not any(fnmatch.fnmatchcase(pattern.replace("*", "x"), t) for t in titles):
                problems.append(f"no data view targets {pattern}")
    return problems


def dashboard_problems(objects: list[dict[str, Any]]) -> list[str]:
    """The five dashboards exist, each with panels."""
    boards = {o["attributes"].get("title"): o for o in objects if o["type"] == "dashboard"}
    problems = [f"no dashboard titled {title!r}" for title in sorted(DASHBOARDS - set(boards))]
    problems += [
        f"dashboard {title!r} has no panel"
        for title, board in boards.items()
        if not json.loads(board["attributes"].get("panelsJSON") or "[]")
    ]
    return problems


# --- tests ------------------------------------------------------------------------------------
def broken_copy(tmp_path: Path, file: str, edit: Callable[[str], str]) -> Sources:
    """Copies of monitoring/kibana and monitoring/elasticsearch with one file edited."""
    sources = Sources(tmp_path / "kibana", tmp_path / "elasticsearch")
    shutil.copytree(KIBANA_DIR, sources.kibana)
    shutil.copytree(ES_DIR, sources.elasticsearch)
    path = tmp_path / file
    text = path.read_text(encoding="utf-8")
    edited = edit(text)
    assert edited != text, f"the edit of {file} changed nothing"
    path.write_text(edited, encoding="utf-8")
    return sources


def _drop_line(needle: str) -> Callable[[str], str]:
    return lambda text: "".join(line for line in text.splitlines(True) if needle not in line)


def _all_problems(sources: Sources) -> list[str]:
    objects = sources.objects()
    return (
        reference_problems(objects)
        + field_problems(objects, sources)
        + data_view_problems(objects, sources)
        + dashboard_problems(objects)
    )


def test_the_saved_objects_are_consistent_with_the_mappings():
    sources = Sources()
    objects = sources.objects()
    assert {o["type"] for o in objects} == {"index-pattern", "lens", "dashboard"}
    assert len(list(lens_states(objects))) == sum(o["type"] == "lens" for o in objects)
    assert _all_problems(sources) == []


def test_every_lens_field_is_checked_against_a_mapping():
    """The check is not vacuous: it reads fields of every data view, Metricbeat's included."""
    sources = Sources()
    objects = sources.objects()
    views = {o["id"]: o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    used = {
        views[view]
        for lens in lens_states(objects)
        for view in lens.layer_views.values()
        if view is not None
    }
    assert used == set(views.values())
    assert (
        view_fields("metricbeat-*,metrics-*", sources)["docker.memory.usage.pct"] == "scaled_float"
    )
    assert view_fields("xgbops-training-runs", sources)["metrics.roc_auc"] == "double"
    assert view_fields("xgbops-feedback-*", sources)["correct"] == "byte"
    assert view_fields("xgbops-rollout-*", sources)["error_rate_low"] == "double"
    assert view_fields("xgbops-decisions-*", sources)["action"] == "keyword"
    histogram = "prometheus.xgbops_http_request_duration_seconds.histogram"
    assert view_fields("metricbeat-*,metrics-*", sources)[histogram] == "histogram"


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        (
            "kibana/data-views.ndjson",
            _drop_line('"id":"xgbops-predictions"'),
            "layer-main -> index-pattern/xgbops-predictions not defined",
        ),
        (
            "kibana/dashboard-drift.ndjson",
            _drop_line('{"type":"lens","id":"xgbops-drift-psi-per-feature"'),
            "drift: reference p3:panel_p3 -> lens/xgbops-drift-psi-per-feature not defined",
        ),
        (
            "kibana/dashboard-models.ndjson",
            lambda t: t.replace('"name":"p2:panel_p2"', '"name":"p2:panel_x"'),
            "panel p2 has no reference panel_p2",
        ),
        (
            "kibana/dashboard-models.ndjson",
            _drop_line('{"type":"lens","id":"xgbops-models-live-accuracy"'),
            "models: reference p7:panel_p7 -> lens/xgbops-models-live-accuracy not defined",
        ),
        (
            "kibana/dashboard-system.ndjson",
            lambda t: t.replace('"name":"indexpattern-datasource-layer-main"', '"name":"layer"', 1),
            "layer main has no data view reference",
        ),
        (
            "kibana/data-views.ndjson",
            _drop_line('"id":"xgbops-decisions"'),
            "lens/xgbops-rollout-decisions: reference indexpattern-datasource-layer-main -> "
            "index-pattern/xgbops-decisions not defined",
        ),
        (
            "kibana/dashboard-rollout.ndjson",
            _drop_line('{"type":"lens","id":"xgbops-rollout-error-rate"'),
            "rollout: reference p5:panel_p5 -> lens/xgbops-rollout-error-rate not defined",
        ),
    ],
    ids=[
        "data-view-dropped",
        "lens-dropped",
        "panel-reference-renamed",
        "live-accuracy-dropped",
        "layer-reference-renamed",
        "decisions-data-view-dropped",
        "rollout-error-rate-dropped",
    ],
)
def test_a_reference_that_points_nowhere_is_found(tmp_path, file, edit, expected):
    sources = broken_copy(tmp_path, file, edit)
    problems = reference_problems(sources.objects())
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        (
            "elasticsearch/index_templates/xgbops-predictions.json",
            lambda t: t.replace('"latency_ms"', '"latency_msec"'),
            "field 'latency_ms' not in the mapping of xgbops-predictions-*",
        ),
        (
            "kibana/dashboard-drift.ndjson",
            lambda t: t.replace('"sourceField":"psi"', '"sourceField":"psi_value"'),
            "field 'psi_value' not in the mapping of xgbops-drift-features-*",
        ),
        (
            "elasticsearch/index_templates/xgbops-feedback.json",
            lambda t: t.replace('"correct"', '"is_correct"'),
            "column accuracy (average): field 'correct' not in the mapping of xgbops-feedback-*",
        ),
        (
            "elasticsearch/index_templates/xgbops-feedback.json",
            lambda t: t.replace('"type": "byte"', '"type": "keyword"'),
            "average cannot use 'correct' of type keyword",
        ),
        (
            "kibana/dashboard-predictions.ndjson",
            lambda t: t.replace(
                '"operationType":"percentile","sourceField":"latency_ms"',
                '"operationType":"percentile","sourceField":"model_version"',
                1,
            ),
            "percentile cannot use 'model_version' of type keyword",
        ),
        (
            "kibana/dashboard-models.ndjson",
            lambda t: t.replace('"query":"champion : true"', '"query":"is_champion : true"'),
            "filter field 'is_champion' not in the mapping of xgbops-training-runs",
        ),
        (
            "kibana/dashboard-drift.ndjson",
            lambda t: t.replace('"query":"drifted : true"', '"query":"has_drifted : true"'),
            "query field 'has_drifted' not in the mapping of xgbops-drift-features-*",
        ),
        (
            "kibana/metricbeat-fields.json",
            lambda t: t.replace('"docker.memory.usage.pct"', '"docker.memory.usage.percent"'),
            "field 'docker.memory.usage.pct' not in the mapping of metricbeat-*,metrics-*",
        ),
        (
            "kibana/dashboard-system.ndjson",
            lambda t: t.replace('"splitAccessor":"split"', '"splitAccessor":"breakdown"', 1),
            "visualisation shows 'breakdown' of layer 'main', which has no such column",
        ),
        (
            "kibana/dashboard-models.ndjson",
            lambda t: t.replace(
                '"dataType":"number","operationType":"terms"',
                '"dataType":"string","operationType":"terms"',
                1,
            ),
            "dataType 'string' does not fit 'version_number' (integer)",
        ),
        (
            "kibana/dashboard-predictions.ndjson",
            lambda t: t.replace(
                '"operationType":"percentile","sourceField":"prometheus.xgbops_http_request_',
                '"operationType":"terms","sourceField":"prometheus.xgbops_http_request_',
                1,
            ),
            "terms cannot use 'prometheus.xgbops_http_request_duration_seconds.histogram' "
            "of type histogram",
        ),
        (
            "kibana/dashboard-predictions.ndjson",
            lambda t: t.replace(
                '"query":"prometheus.labels.status : 5*","language":"kuery"},"label":"5xx"',
                '"query":"prometheus.labels.code : 5*","language":"kuery"},"label":"5xx"',
            ),
            "filters field 'prometheus.labels.code' not in the mapping of metricbeat-*,metrics-*",
        ),
        (
            "kibana/dashboard-predictions.ndjson",
            lambda t: t.replace(
                '"formula":"sum(prometheus.xgbops_http_requests_total.rate,',
                '"formula":"sum(prometheus.xgbops_http_requests_total.rates,',
                1,
            ),
            "formula field 'prometheus.xgbops_http_requests_total.rates' not in the mapping",
        ),
        (
            "kibana/dashboard-predictions.ndjson",
            lambda t: t.replace(
                "kql='prometheus.labels.status : 5*')", "kql='prometheus.labels.code : 5*')", 1
            ),
            "formula query field 'prometheus.labels.code' not in the mapping",
        ),
        (
            "kibana/dashboard-predictions.ndjson",
            lambda t: t.replace('"references":["e5X2"]', '"references":["e5X9"]', 1),
            "column e5 (formula): references 'e5X9', which the layer does not have",
        ),
        (
            "elasticsearch/index_templates/xgbops-rollout.json",
            lambda t: t.replace('"error_rate_low"', '"error_rate_lower"'),
            "column error_rate_low (average): field 'error_rate_low' not in the mapping of "
            "xgbops-rollout-*",
        ),
        (
            "elasticsearch/index_templates/xgbops-rollout.json",
            lambda t: t.replace(
                '"latency_p95_ms": {\n          "type": "double"',
                '"latency_p95_ms": {\n          "type": "keyword"',
            ),
            "average cannot use 'latency_p95_ms' of type keyword",
        ),
        (
            "kibana/dashboard-rollout.ndjson",
            lambda t: t.replace(
                '"query":"action : guard_stop or action : rollback"',
                '"query":"decision : guard_stop or action : rollback"',
            ),
            "query field 'decision' not in the mapping of xgbops-decisions-*",
        ),
        (
            "elasticsearch/index_templates/xgbops-decisions.json",
            lambda t: t.replace('"reason"', '"why"'),
            "column reason (terms): field 'reason' not in the mapping of xgbops-decisions-*",
        ),
    ],
    ids=[
        "template-field-renamed",
        "lens-field-renamed",
        "feedback-field-renamed",
        "live-accuracy-on-a-keyword",
        "numeric-operation-on-keyword",
        "column-filter-field",
        "query-field",
        "metricbeat-field-undocumented",
        "dangling-accessor",
        "wrong-data-type",
        "histogram-in-a-bucket-operation",
        "filters-bucket-query-field",
        "formula-field",
        "formula-query-field",
        "formula-dangling-reference",
        "rollout-interval-field-renamed",
        "rollout-latency-on-a-keyword",
        "decisions-query-field",
        "decisions-table-field-renamed",
    ],
)
def test_a_field_that_is_missing_or_of_the_wrong_type_is_found(tmp_path, file, edit, expected):
    sources = broken_copy(tmp_path, file, edit)
    problems = field_problems(sources.objects(), sources)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("family", ["processes", "feedback", "rollout", "decisions"])
def test_an_event_index_without_a_data_view_is_found(tmp_path, family):
    sources = broken_copy(
        tmp_path, "kibana/data-views.ndjson", _drop_line(f'"id":"xgbops-{family}"')
    )
    assert f"no data view targets xgbops-{family}-*" in data_view_problems(
        sources.objects(), sources
    )


def test_a_data_view_on_unmapped_indices_is_found(tmp_path):
    sources = broken_copy(
        tmp_path,
        "kibana/data-views.ndjson",
        lambda t: t.replace('"title":"xgbops-system-*"', '"title":"xgbops-sys-*"'),
    )
    problems = data_view_problems(sources.objects(), sources)
    assert "index-pattern/xgbops-system: 'xgbops-sys-*' targets no known mapping" in problems


def test_the_five_dashboards_exist(tmp_path):
    titles = {o["attributes"]["title"] for o in Sources().objects() if o["type"] == "dashboard"}
    assert titles == DASHBOARDS
    sources = broken_copy(
        tmp_path, "kibana/dashboard-system.ndjson", _drop_line('"type":"dashboard"')
    )
    assert dashboard_problems(sources.objects()) == ["no dashboard titled 'System & containers'"]


def test_a_line_that_is_not_a_saved_object_is_refused(tmp_path):
    sources = broken_copy(
        tmp_path,
        "kibana/data-views.ndjson",
        lambda t: t.replace('"attributes":', '"attrs":', 1),
    )
    with pytest.raises(MonitoringError, match=r"data-views.ndjson:1: a saved object needs"):
        sources.objects()
