"""OpenAPI links, written once for both apps: how a client follows an answer to what it names.

A prediction leads to its feedback (its id and the label to confirm or correct) and to the
history of its model version; a retraining job to its status. Schemathesis' stateful phase
follows these links, so the fuzzer sends feedback for ids the API really handed out.
"""

from __future__ import annotations

from typing import Any, Final


def operation_ref(path: str, method: str) -> str:
    """A JSON pointer to an operation of the same document (``~`` and ``/`` escaped)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _prediction_links(pointer: str) -> dict[str, Any]:
    return {
        "SendFeedback": {
            "operationRef": operation_ref("/feedback", "post"),
            "description": "Send the true label of this prediction once it is known.",
            "requestBody": {
                "prediction_id": f"$response.body#{pointer}/prediction_id",
                "label": f"$response.body#{pointer}/label",
            },
        },
        "ReadHistory": {
            "operationRef": operation_ref("/predictions", "get"),
            "description": "The stored predictions of the model version that answered.",
            "parameters": {"model_version": "$response.body#/model_version"},
        },
    }


#: The links of a 200 from ``POST /predict`` (and ``/api/v1/predict``).
PREDICT_LINKS: Final = _prediction_links("")
#: The links of a 200 from ``POST /predict/batch``: the first prediction's.
BATCH_LINKS: Final = _prediction_links("/predictions/0")
#: The links of a 202 from ``POST /retrain``.
RETRAIN_LINKS: Final = {
    "ReadJob": {
        "operationRef": operation_ref("/retrain/{job_id}", "get"),
        "description": "Follow the job until it succeeds or fails.",
        "parameters": {"job_id": "$response.body#/job_id"},
    }
}
