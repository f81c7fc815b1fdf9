"""Pydantic models generated from the dataset configuration (via ``RecordSpec``).

They document the OpenAPI schema: the core checks every body (:meth:`RecordSpec.validate`), so
FastAPI refuses exactly what Flask refuses, with the same reason.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from api.core.feedback import PREDICTION_ID
from api.core.schema import FieldSpec, RecordSpec


def _annotation(spec: FieldSpec) -> tuple[Any, Any]:
    base: Any = float
    if spec.kind == "categorical":
        base = Literal[spec.categories]
    if spec.nullable:
        base = Optional[base]
    extra: dict[str, Any] = {"multipleOf": 1} if spec.integer else {}
    field = Field(
        default=None if spec.nullable else ...,
        description=spec.description,
        ge=spec.minimum,
        le=spec.maximum,
        examples=[spec.example()],
        json_schema_extra=extra or None,
    )
    return base, field


def record_model(spec: RecordSpec, name: str = "Record") -> type[BaseModel]:
    """A model with one field per input feature; unknown fields are refused."""
    fields = {f.name: _annotation(f) for f in spec.fields}
    config = ConfigDict(extra="forbid", json_schema_extra={"example": spec.example()})
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        name, __config__=config, **fields
    )
    return model


def batch_model(record: type[BaseModel], limit: int) -> type[BaseModel]:
    """``{"records": [Record, ...]}`` for the OpenAPI document (the core checks the records)."""
    records = (list[record], Field(min_length=1, max_length=limit))  # type: ignore[valid-type]
    config = ConfigDict(extra="forbid")  # documents additionalProperties: false
    model: type[BaseModel] = create_model("Batch", __config__=config, records=records)
    return model


def feedback_model(labels: tuple[str, ...]) -> type[BaseModel]:
    """``{"prediction_id", "label"}`` for the OpenAPI document (the core checks the body)."""
    config = ConfigDict(extra="forbid")  # documents additionalProperties: false
    label: Any = Literal[labels]
    model: type[BaseModel] = create_model(
        "Feedback",
        __config__=config,
        prediction_id=(
            str,
            Field(pattern=PREDICTION_ID.pattern, description="the id /predict returned"),
        ),
        label=(label, Field(description="the true outcome, learnt after the prediction")),
    )
    return model
