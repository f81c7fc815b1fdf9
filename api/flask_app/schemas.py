"""Marshmallow schemas generated from the dataset configuration (via ``RecordSpec``).

The record schema is the Flask app's request schema (the OpenAPI document's ``Record``; the view
calls its ``load``), but it does not check values itself: ``load`` hands the body
to :meth:`RecordSpec.validate`, the one check both apps share, and raises the core's
:class:`ValidationFailed`, which both apps turn into the one error body. The fields' types and
validators describe the same rules for the document.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from api.core.errors import ValidationFailed
from api.core.feedback import PREDICTION_ID
from api.core.schema import FieldSpec, RecordSpec


def _field(spec: FieldSpec) -> fields.Field[Any]:
    options: dict[str, Any] = {
        "required": not spec.nullable,
        "allow_none": spec.nullable,
        "metadata": {"description": spec.description, "example": spec.example()},
    }
    if spec.kind == "categorical":
        return fields.String(validate=validate.OneOf(spec.categories), **options)
    bounds = validate.Range(min=spec.minimum, max=spec.maximum)
    if spec.integer:
        return fields.Integer(validate=bounds, **options)
    return fields.Float(validate=bounds, **options)


class CoreChecked(Schema):
    """A schema whose ``load`` is the core's check (:meth:`RecordSpec.validate`)."""

    record_spec: RecordSpec  # named so that no dataset feature can shadow it

    def load(self, data: Any, **kwargs: Any) -> Any:
        """The record as the model gets it.

        Raises:
            ValidationFailed: every invalid, missing or unknown field, with its reason (422).
        """
        del kwargs  # many/partial/unknown: one record, whole, unknown fields refused
        record, problems = self.record_spec.validate(data)
        if problems:
            raise ValidationFailed(problems)
        return record


def record_schema(spec: RecordSpec, name: str = "Record") -> type[CoreChecked]:
    """A schema class with one field per input feature; unknown fields are refused."""
    attributes: dict[str, Any] = {f.name: _field(f) for f in spec.fields}
    attributes["Meta"] = type("Meta", (), {"unknown": RAISE, "ordered": True})
    schema: type[CoreChecked] = type(name, (CoreChecked,), attributes)
    schema.record_spec = spec  # after the fields: a feature may be called anything
    return schema


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
