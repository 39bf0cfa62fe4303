"""The anonymised result message: an explicit allow-list, built field by field from a ``Result``.

Nothing is copied wholesale from ``Result.to_json()``: a field added there later must never reach the
broker by accident. The message carries no image, no free text, no name, no network address and no exact
time: ``time`` is rounded down to the minute and ``event_id`` is a fresh random id (not the result id the
kiosk and local history use, so the two cannot be joined). ``schemas/result.v1.json`` describes it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from edge.types import Result, Urgency

SCHEMA_VERSION = 1
REQUIRED_KEYS = frozenset({"event_id", "time", "label", "confidence", "urgency", "abstained", "model_version",
                           "device_id", "schema"})
OPTIONAL_KEYS = frozenset({"age_band", "body_site"})
ALLOWED_KEYS = REQUIRED_KEYS | OPTIONAL_KEYS
# Coarse categories only: an exact age or a precise location could help re-identify a person.
AGE_BANDS = ("0-17", "18-39", "40-59", "60-79", "80+")
BODY_SITES = ("head_neck", "trunk", "upper_limb", "lower_limb", "hand_foot", "genital", "other")


def minute_floor_iso(timestamp: float) -> str:
    """UTC ISO 8601 time rounded down to the minute: ``2024-05-01T12:34:00Z``."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).replace(second=0, microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:00Z")


def result_payload(result: Result, device_id: str, *, include_age_band: bool = False,
                   include_body_site: bool = False, age_band: str | None = None,
                   body_site: str | None = None) -> dict[str, Any]:
    """The allow-listed message for one screening. Age band and body site only when the operator enabled
    them *and* a value from the fixed vocabulary is given; anything else is left out, never passed through."""
    payload: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "time": minute_floor_iso(result.timestamp),
        "label": str(result.label),
        "confidence": round(float(result.confidence), 3),
        "urgency": Urgency(result.urgency).value,
        "abstained": bool(result.abstained),
        "model_version": str(result.model.version),
        "device_id": device_id,
        "schema": SCHEMA_VERSION,
    }
    if include_age_band and age_band in AGE_BANDS:
        payload["age_band"] = age_band
    if include_body_site and body_site in BODY_SITES:
        payload["body_site"] = body_site
    if not set(payload) <= ALLOWED_KEYS:  # the allow-list is the contract; this guards future edits here
        raise RuntimeError(f"result payload has keys outside the allow-list: {set(payload) - ALLOWED_KEYS}")
    return payload


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def json_schema() -> dict[str, Any]:
    """The JSON schema of a result message; ``schemas/result.v1.json`` is this, written out."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edge anonymised screening result, schema 1",
        "description": "One message per screening on <prefix>/results (QoS 1). Duplicates after a reconnect "
                       "share event_id. No image, free text, name, network address or exact time.",
        "type": "object",
        "additionalProperties": False,
        "required": sorted(REQUIRED_KEYS),
        "properties": {
            "event_id": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                         "description": "Random per message; not the device's local result id."},
            "time": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00Z$",
                     "description": "UTC, rounded down to the minute."},
            "label": {"type": "string", "minLength": 1, "maxLength": 100,
                      "description": "The model's label (from the model pack's fixed label list)."},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1,
                           "description": "Calibrated probability of the label, 3 decimals."},
            "urgency": {"enum": [u.value for u in Urgency]},
            "abstained": {"type": "boolean", "description": "The model was unsure: see a clinician."},
            "model_version": {"type": "string", "minLength": 1, "maxLength": 50},
            "device_id": {"type": "string", "pattern": "^[0-9a-f]{16}$",
                          "description": "Random id of the device, not derived from hardware."},
            "schema": {"const": SCHEMA_VERSION},
            "age_band": {"enum": list(AGE_BANDS), "description": "Only when mqtt.results.include_age_band."},
            "body_site": {"enum": list(BODY_SITES), "description": "Only when mqtt.results.include_body_site."},
        },
    }
