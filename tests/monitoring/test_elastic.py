"""``xgbops monitor setup``: the exact requests that install monitoring/elasticsearch, their
order, idempotence and prefixes; and the same against a real cluster when one is configured."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import UTC, datetime

import pytest

from tests.monitoring.conftest import ES_DIR, FAST_RETRY
from tests.monitoring.sample import all_kinds
from xgbops.monitoring import MonitoringError, elastic
from xgbops.monitoring.sinks import ElasticsearchSink


def _install(settings):
    return elastic.install(settings, elastic.create_client(settings.monitoring, FAST_RETRY))


def _files(kind: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((ES_DIR / kind).glob("*.json"))}


def test_setup_puts_every_file_in_order_with_its_exact_body(fake_es, es_settings):
    result = _install(es_settings())
    assert result.cluster_version == "9.1.0"
    puts = [(r.path, r) for r in fake_es.requests if r.method == "PUT"]
    expected_paths = [f"/_ilm/policy/{name}" for name in _files("ilm")] + [
        f"/_component_template/{name}" for name in _files("component_templates")
    ]
    for name, body in _files("index_templates").items():
        expected_paths.append(f"/_index_template/{name}")
        expected_paths.append(f"/{','.join(body['index_patterns'])}/_mapping")
    assert [path for path, _ in puts] == expected_paths
    bodies = {path: request.json() for path, request in puts}
    for name, body in _files("ilm").items():
        assert bodies[f"/_ilm/policy/{name}"] == body
    for name, body in _files("index_templates").items():
        assert bodies[f"/_index_template/{name}"] == body
        mapping_put = bodies[f"/{','.join(body['index_patterns'])}/_mapping"]
        assert mapping_put == body["template"]["mappings"]
    mapping_query = next(r.query for p, r in puts if p.endswith("/_mapping"))
    assert mapping_query["allow_no_indices"] == ["true"]
    assert mapping_query["ignore_unavailable"] == ["true"]
    assert result.installed[0] == "ilm/xgbops-monitoring"


def test_setup_twice_sends_the_same_requests_and_changes_nothing(fake_es, es_settings):
    _install(es_settings())
    first = [(r.method, r.path, r.body) for r in fake_es.requests]
    state = (dict(fake_es.policies), dict(fake_es.components), dict(fake_es.templates))
    _install(es_settings())
    second = [(r.method, r.path, r.body) for r in fake_es.requests[len(first) :]]
    assert second == first
    assert (fake_es.policies, fake_es.components, fake_es.templates) == state


def test_another_prefix_renames_templates_patterns_components_and_policies(fake_es, es_settings):
    result = _install(es_settings(index_prefix="team-a"))
    assert "index_templates/team-a-predictions" in result.installed
    assert set(fake_es.policies) == {"team-a-monitoring", "team-a-system"}
    assert set(fake_es.components) == {"team-a-settings"}
    template = fake_es.templates["team-a-predictions"]
    assert template["index_patterns"] == ["team-a-predictions-*"]
    assert template["composed_of"] == ["team-a-settings"]
    assert template["template"]["settings"]["index"]["lifecycle"]["name"] == "team-a-monitoring"
    assert not any(name.startswith("xgbops") for name in fake_es.templates)


def test_a_refused_resource_is_named_in_one_error(fake_es, es_settings):
    fake_es.fail_requests(400, "/_index_template/xgbops-predictions")
    with pytest.raises(MonitoringError) as error:
        _install(es_settings())
    assert str(error.value) == (
        "Elasticsearch setup failed at index_templates/xgbops-predictions: "
        "400 illegal_argument_exception: scripted fault"
    )


def test_an_old_cluster_is_refused(fake_es, es_settings):
    fake_es.version = "7.17.0"
    with pytest.raises(MonitoringError, match="7.17.0 is too old"):
        _install(es_settings())
    assert not fake_es.templates


def test_an_unreachable_cluster_is_one_error(fake_es, es_settings):
    settings = es_settings()
    fake_es.stop()
    with pytest.raises(MonitoringError, match=r"setup failed at \(connecting\): ConnectionError"):
        _install(settings)


def test_the_project_copy_of_the_files_wins_and_a_broken_one_is_named(es_settings):
    settings = es_settings()
    copy = settings.project_dir / "monitoring" / "elasticsearch"
    shutil.copytree(ES_DIR, copy)
    assert elastic.resource_dir(settings) == copy
    broken = copy / "index_templates" / "xgbops-system.json"
    broken.write_text(broken.read_text()[:-10])
    with pytest.raises(MonitoringError, match="xgbops-system.json: cannot be read as JSON"):
        _install(settings)
    broken.write_text("[]")
    with pytest.raises(MonitoringError, match="xgbops-system.json: expected a JSON object"):
        _install(settings)


def test_no_resource_directory_anywhere_is_named(settings, monkeypatch):
    monkeypatch.setattr(elastic, "RESOURCE_DIR", elastic.RESOURCE_DIR / "absent")
    with pytest.raises(
        MonitoringError, match="monitoring/elasticsearch/absent: directory not found"
    ):
        elastic.resource_dir(settings)


# -- a real cluster, when one is configured ---------------------------------------------------

REAL_URL = os.environ.get("ELASTICSEARCH_URL")
real_cluster = pytest.mark.skipif(
    not REAL_URL,
    reason="ELASTICSEARCH_URL is not set: the Elasticsearch tests ran against the local fake "
    "server only (set it, e.g. http://127.0.0.1:9200, plus ELASTICSEARCH_API_KEY or "
    "ELASTICSEARCH_USERNAME/ELASTICSEARCH_PASSWORD, to run them against a real cluster)",
)


@pytest.fixture
def real_settings(make_settings):
    """Settings for the real cluster with a throw-away prefix; its resources are removed after."""
    prefix = f"xgbops-test-{uuid.uuid4().hex[:8]}"
    monitoring = {
        "sink": "elasticsearch",
        "elasticsearch_url": REAL_URL,
        "elasticsearch_api_key": os.environ.get("ELASTICSEARCH_API_KEY"),
        "elasticsearch_username": os.environ.get("ELASTICSEARCH_USERNAME"),
        "elasticsearch_password": os.environ.get("ELASTICSEARCH_PASSWORD"),
        "index_prefix": prefix,
    }
    settings = make_settings(monitoring={k: v for k, v in monitoring.items() if v})
    yield settings
    client = elastic.create_client(settings.monitoring)
    client.options(ignore_status=404).indices.delete(index=f"{prefix}-*", expand_wildcards="all")
    for resource in elastic.load_resources(ES_DIR, prefix)[::-1]:
        if resource.kind == "index_templates":
            client.options(ignore_status=404).indices.delete_index_template(name=resource.name)
        elif resource.kind == "component_templates":
            client.options(ignore_status=404).cluster.delete_component_template(name=resource.name)
        else:
            client.options(ignore_status=404).ilm.delete_lifecycle(name=resource.name)
    client.close()


@real_cluster
def test_real_cluster_setup_is_idempotent_and_every_event_kind_is_accepted(real_settings, tmp_path):
    first = elastic.install(real_settings)
    assert first.installed == elastic.install(real_settings).installed
    sink = ElasticsearchSink(real_settings.monitoring)
    events = all_kinds(tmp_path, datetime.now(UTC))
    shipped = sink.ship(events)
    assert (shipped.failed, shipped.created) == (0, len(events)), shipped.errors
    again = sink.ship(events)
    assert again.failed == 0 and again.created == 0
    assert again.already_shipped + again.updated == len(events)
    prefix = real_settings.monitoring.index_prefix
    sink.client.indices.refresh(index=f"{prefix}-*")
    count = sink.client.count(index=f"{prefix}-*")["count"]
    assert count == len(events)
    mapping = sink.client.indices.get_mapping(index=f"{prefix}-predictions-*")
    (index_mapping,) = mapping.body.values()
    assert index_mapping["mappings"]["dynamic"] == "strict"
    sink.close()
