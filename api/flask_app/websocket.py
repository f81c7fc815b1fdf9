"""WS /ws/predict for Flask, with flask-sock: one JSON message in, one JSON answer out."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, request
from flask_sock import Sock

from api.core.rollout import request_caller
from api.core.service import PredictionService, new_request_id


def register_websocket(app: Flask, service: PredictionService) -> None:
    """Add the WebSocket route to ``app``."""
    sock = Sock(app)

    @sock.route("/ws/predict")
    def ws_predict(ws: Any) -> None:
        request_id = new_request_id(None)
        key_header = service.settings.rollout.key_header
        caller = request_caller(request.headers.get, request.remote_addr or "unknown", key_header)
        while True:
            message = ws.receive()
            if message is None:
                return
            ws.send(json.dumps(service.answer_message(message, request_id, caller)))
