"""Marshmallow schemas generated from the dataset configuration (via ``RecordSpec``).

Each field delegates the value check to :meth:`FieldSpec.clean`, so Flask refuses exactly what
FastAPI refuses, with the same reason; the marshmallow validators only document bounds and
categories in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from api.core import schema as core
from api.core.feedback import PREDICTION_ID
from api.core.schema import FieldSpec, InvalidValue, RecordSpec

#: Who may answer a prediction (api.core.rollout).
ARMS = ("champion", "challenger")

_MESSAGES = {"required": core.MISSING, "null": core.NULL}


class _Checked(fields.Field):  # type: ignore[type-arg]
    """Deserialise through the core's check, so the reason is the core's, word for word."""

    spec: FieldSpec

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        del attr, data, kwargs
        try:
            return self.spec.clean(value)
        except InvalidValue as exc:
            raise ValidationError(str(exc)) from None


class CheckedNumber(_Checked, fields.Float):
    """A numeric input (documented as ``number``, or ``integer`` for whole-number features)."""

    def __init__(self, spec: FieldSpec, **kwargs: Any) -> None:
        self.spec = spec
        super().__init__(**kwargs)


class CheckedInteger(_Checked, fields.Integer):
    """A whole-number input (documented as ``integer``)."""

    def __init__(self, spec: FieldSpec, **kwargs: Any) -> None:
        self.spec = spec
        super().__init__(**kwargs)


class CheckedCategory(_Checked, fields.String):
    """A categorical input (documented as a string enum)."""

    def __init__(self, spec: FieldSpec, **kwargs: Any) -> None:
        self.spec = spec
        super().__init__(**kwargs)


def _field(spec: FieldSpec) -> fields.Field[Any]:
    options: dict[str, Any] = {
        "required": not spec.nullable,
        "allow_none": spec.nullable,  # marshmallow refuses None with the core's reason (NULL)
        "error_messages": _MESSAGES,
        "metadata": {"description": spec.description, "example": spec.example()},
    }
    if spec.nullable:
        options["load_default"] = None
    if spec.kind == "categorical":
        return CheckedCategory(spec, validate=validate.OneOf(spec.categories), **options)
    bounds = validate.Range(min=spec.minimum, max=spec.maximum)
    if spec.integer:
        return CheckedInteger(spec, validate=bounds, **options)
    return CheckedNumber(spec, validate=bounds, **options)


def record_schema(spec: RecordSpec, name: str = "Record") -> type[Schema]:
    """A schema class with one field per input feature; unknown fields are refused."""
    attributes: dict[str, Any] = {f.name: _field(f) for f in spec.fields}
    attributes["Meta"] = type("Meta", (), {"unknown": RAISE, "ordered": True})
    attributes["error_messages"] = {"unknown": core.UNKNOWN, "type": core.NOT_AN_OBJECT}
    return type(name, (Schema,), attributes)


def batch_schema(record: type[Schema], limit: int) -> type[Schema]:
    """``{"records": [Record, ...]}``, documented; validated by the core's batch check."""
    attributes = {
        "records": fields.List(
            fields.Nested(record),
            required=True,
            validate=validate.Length(min=1, max=limit),
            metadata={"description": f"1 to {limit} records"},
        ),
        "Meta": type("Meta", (), {"unknown": RAISE}),  # documents additionalProperties: false
    }
    return type("Batch", (Schema,), attributes)


def feedback_schema(labels: tuple[str, ...]) -> type[Schema]:
    """``{"prediction_id", "label"}`` for the OpenAPI document (the core checks the body)."""
    attributes = {
        "prediction_id": fields.String(
            required=True,
            validate=validate.Regexp(PREDICTION_ID.pattern),
            metadata={"description": "the id /predict returned", "example": "0" * 32},
        ),
        "label": fields.String(
            required=True,
            validate=validate.OneOf(labels),
            metadata={"description": "the true outcome, learnt after the prediction"},
        ),
        "Meta": type("Meta", (), {"unknown": RAISE}),
    }
    return type("Feedback", (Schema,), attributes)


class FeedbackResponseSchema(Schema):
    """The answer to POST /feedback: what was stored, and when."""

    prediction_id = fields.String()
    label = fields.String()
    received_at = fields.DateTime()


class PredictionSchema(Schema):
    """One scored record."""

    prediction_id = fields.String(metadata={"description": "id of the stored prediction"})
    probability = fields.Float(metadata={"description": "probability of the positive label"})
    label = fields.String()


class PredictResponseSchema(PredictionSchema):
    """The answer to POST /predict."""

    threshold = fields.Float()
    model_name = fields.String()
    model_version = fields.String()
    run_id = fields.String(allow_none=True, metadata={"description": "the model's MLflow run"})
    arm = fields.String(
        validate=validate.OneOf(ARMS), metadata={"description": "the rollout arm that answered"}
    )


class BatchResponseSchema(Schema):
    """The answer to POST /predict/batch."""

    model_name = fields.String()
    model_version = fields.String()
    run_id = fields.String(allow_none=True, metadata={"description": "the model's MLflow run"})
    arm = fields.String(
        validate=validate.OneOf(ARMS), metadata={"description": "the rollout arm that answered"}
    )
    threshold = fields.Float()
    count = fields.Integer()
    predictions = fields.List(fields.Nested(PredictionSchema))


class ErrorDetailSchema(Schema):
    """One offending field."""

    field = fields.String()
    reason = fields.String()


class ErrorBodySchema(Schema):
    """The one error shape of both apps."""

    error = fields.String()
    message = fields.String()
    detail = fields.List(fields.Nested(ErrorDetailSchema))
