"""Home Assistant MQTT discovery: retained configs so the device's sensors appear without YAML.

Each sensor reads one field of the retained telemetry message; availability follows the ``status`` topic
(and so the last will), the way Frigate exposes its ``available`` topic.
"""

from __future__ import annotations

from typing import Any

from edge import __version__
from edge.mqtt.topics import Topics, discovery_topic

# object id -> (name, telemetry template, unit, device class)
SENSORS: dict[str, tuple[str, str, str | None, str | None]] = {
    "status": ("Status", "{{ value_json.status }}", None, None),
    "model_version": ("Model version", "{{ value_json.model.version }}", None, None),
    "backend": ("Backend", "{{ value_json.backend }}", None, None),
    "fps": ("Frames per second", "{{ value_json.fps }}", "fps", None),
    "classifications": ("Classifications", "{{ value_json.classifications }}", None, None),
    "queue_depth": ("Outbox depth", "{{ value_json.queue_depth }}", None, None),
    "cpu_temp_c": ("CPU temperature", "{{ value_json.cpu_temp_c }}", "°C", "temperature"),
    "memory_rss_mb": ("Memory", "{{ value_json.memory_rss_mb }}", "MB", None),
}


def discovery_messages(discovery_prefix: str, device_id: str, topics: Topics) -> list[tuple[str, dict[str, Any]]]:
    device = {"identifiers": [f"edge_{device_id}"], "name": f"edge {device_id}", "manufacturer": "edge",
              "model": "skin-screening aid", "sw_version": __version__}
    messages = []
    for object_id, (name, template, unit, device_class) in SENSORS.items():
        config: dict[str, Any] = {
            "name": name, "unique_id": f"edge_{device_id}_{object_id}", "object_id": f"edge_{device_id}_{object_id}",
            "state_topic": topics.telemetry, "value_template": template,
            "availability_topic": topics.status, "payload_available": "online", "payload_not_available": "offline",
            "device": device,
        }
        if unit:
            config["unit_of_measurement"] = unit
            config["state_class"] = "measurement"
        if device_class:
            config["device_class"] = device_class
        messages.append((discovery_topic(discovery_prefix, device_id, object_id), config))
    return messages
