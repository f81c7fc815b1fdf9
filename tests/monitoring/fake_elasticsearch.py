"""A local HTTP server that answers as Elasticsearch 9's REST API documents, and records requests.

What it implements, as the reference documents it: the root ``GET /`` (cluster info), ILM
policies, component and index templates (a template naming a missing component is refused with
400 like a real cluster), ``PUT <index>/_mapping``, and ``POST _bulk`` with per-item results
(``create`` on an existing id is a 409 ``version_conflict_engine_exception``; a document that does
not fit its template's strict mapping is a 400 ``strict_dynamic_mapping_exception``). Every answer
carries ``X-Elastic-Product: Elasticsearch`` (the 9.x client refuses a server without it) and
the compatibility media type. Faults are scripted: whole requests answered 429/503, or single
bulk items rejected with a given status.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.monitoring.mapping_check import template_for, violations

COMPAT_JSON = "application/vnd.elasticsearch+json;compatible-with=9"
_ERROR_TYPES = {
    400: "illegal_argument_exception",
    404: "resource_not_found_exception",
    409: "version_conflict_engine_exception",
    429: "es_rejected_execution_exception",
    503: "unavailable_shards_exception",
}


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def ndjson(self) -> list[dict[str, Any]]:
        """The body as newline-delimited JSON (a bulk request)."""
        return [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]


@dataclass
class FakeElasticsearch:
    """The server's state: what was installed, the stored documents, scripted faults."""

    product_header: bool = True
    version: str = "9.1.0"
    requests: list[Recorded] = field(default_factory=list)
    policies: dict[str, Any] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)
    templates: dict[str, Any] = field(default_factory=dict)
    #: index -> id -> document
    indices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: (status, path substring) answered instead of the next matching requests.
    request_faults: deque[tuple[int, str]] = field(default_factory=deque)
    #: id -> statuses to answer for that document's next bulk items.
    item_faults: dict[str, deque[int]] = field(default_factory=dict)
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeElasticsearch:
        """Listen on a free port of 127.0.0.1 in a background thread."""
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail_requests(self, status: int, path_part: str = "", times: int = 1) -> None:
        """Answer the next ``times`` requests whose path contains ``path_part`` with ``status``."""
        self.request_faults.extend([(status, path_part)] * times)

    def fail_item(self, doc_id: str, *statuses: int) -> None:
        """Reject document ``doc_id`` with these statuses in its next bulk items."""
        self.item_faults.setdefault(doc_id, deque()).extend(statuses)

    def bulk_requests(self) -> list[Recorded]:
        """The bulk requests received, oldest first."""
        return [r for r in self.requests if r.path.endswith("/_bulk")]

    def documents(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every stored document by (index, id)."""
        return {(i, d): doc for i, docs in self.indices.items() for d, doc in docs.items()}

    # -- the API ---------------------------------------------------------------------------

    def handle(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        """Answer one request: (status, JSON body)."""
        with self._lock:
            self.requests.append(request)
            for position, (status, part) in enumerate(self.request_faults):
                if part in request.path:
                    del self.request_faults[position]
                    return status, _error(status, "scripted fault")
            return self._route(request)

    def _route(self, request: Recorded) -> tuple[int, dict[str, Any]]:
        parts = [p for p in request.path.split("/") if p]
        method = request.method
        if method == "GET" and not parts:
            return 200, {
                "name": "fake",
                "cluster_name": "xgbops-test",
                "version": {"number": self.version, "build_flavor": "default"},
                "tagline": "You Know, for Search",
            }
        if method == "PUT" and parts[:2] == ["_ilm", "policy"]:
            self.policies[parts[2]] = request.json()
            return 200, {"acknowledged": True}
        if method == "PUT" and parts[0] == "_component_template":
            self.components[parts[1]] = request.json()
            return 200, {"acknowledged": True}
        if method == "PUT" and parts[0] == "_index_template":
            return self._put_template(parts[1], request.json())
        if method == "PUT" and parts[-1] == "_mapping":
            return 200, {"acknowledged": True}
        if method in ("POST", "PUT") and parts[-1] == "_bulk":
            return 200, self._bulk(request.ndjson())
        return 404, _error(404, f"no handler for {method} {request.path}")

    def _put_template(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        missing = [c for c in body.get("composed_of", []) if c not in self.components]
        if missing:
            return 400, _error(
                400,
                f"index template [{name}] specifies component templates {missing} "
                "that do not exist",
                "invalid_index_template_exception",
            )
        self.templates[name] = body
        return 200, {"acknowledged": True}

    def _bulk(self, lines: list[dict[str, Any]]) -> dict[str, Any]:
        items = []
        position = 0
        while position < len(lines):
            ((op, meta),) = lines[position].items()
            document = lines[position + 1]
            position += 2
            items.append({op: self._bulk_item(op, meta["_index"], meta["_id"], document)})
        errors = any("error" in next(iter(i.values())) for i in items)
        return {"took": 1, "errors": errors, "items": items}

    def _bulk_item(
        self, op: str, index: str, doc_id: str, document: dict[str, Any]
    ) -> dict[str, Any]:
        base = {"_index": index, "_id": doc_id}
        faults = self.item_faults.get(doc_id)
        if faults:
            status = faults.popleft()
            return {**base, "status": status, "error": _error(status, "scripted")["error"]}
        template = template_for(index, self.templates)
        if template is not None:
            problems = violations(document, template["template"]["mappings"])
            if problems:
                reason = f"mapping rejected [{problems[0]}]"
                error = _error(400, reason, "strict_dynamic_mapping_exception")["error"]
                return {**base, "status": 400, "error": error}
        stored = self.indices.setdefault(index, {})
        if op == "create" and doc_id in stored:
            reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
            return {**base, "status": 409, "error": _error(409, reason)["error"]}
        result = "updated" if doc_id in stored else "created"
        stored[doc_id] = document
        return {
            **base,
            "_version": 1,
            "result": result,
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "status": 200 if result == "updated" else 201,
        }


def _error(status: int, reason: str, error_type: str | None = None) -> dict[str, Any]:
    kind = error_type or _ERROR_TYPES.get(status, "exception")
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: FakeElasticsearch

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Recorded(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        status, body = self.server_state.handle(request)
        payload = json.dumps(body).encode()
        self.send_response(status)
        if self.server_state.product_header:
            self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Type", COMPAT_JSON)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Keep the test output quiet."""
