"""Topic layout and MQTT topic matching, as pure functions with no paho import.

Every device lives under ``topic_prefix`` (default ``edge/{device_id}``)::

    <prefix>/status       retained "online" / "offline" (last will)
    <prefix>/telemetry    retained JSON health, every ``telemetry_interval_s``
    <prefix>/results      one anonymised result per screening, QoS 1
    <prefix>/cmd          signed commands for this device
    <prefix>/cmd/reply    replies to commands
    <fleet_topic>         signed commands for every device (default ``edge/fleet/cmd``)

``topic_matches`` is separate and tested on its own, like paho's ``topic_matches_sub``, so that the admin
tools and the tests can route messages without a client.
"""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_PLACEHOLDER = "{device_id}"
MAX_TOPIC_BYTES = 65535


class TopicError(ValueError):
    """A topic or filter breaks the MQTT rules (wildcards, empty, too long, NUL)."""


def check_topic_name(topic: str) -> str:
    """A topic we publish to: no wildcards, not empty, no NUL, at most 65535 UTF-8 bytes."""
    if not topic:
        raise TopicError("topic must not be empty")
    if "+" in topic or "#" in topic:
        raise TopicError(f"topic {topic!r} must not contain the wildcards + or #")
    if "\0" in topic:
        raise TopicError("topic must not contain NUL")
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise TopicError("topic is longer than 65535 bytes")
    return topic


def check_topic_filter(pattern: str) -> str:
    """A subscription filter: ``+`` fills a whole level, ``#`` only as the whole last level."""
    if not pattern or "\0" in pattern:
        raise TopicError("topic filter must not be empty or contain NUL")
    levels = pattern.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise TopicError(f"filter {pattern!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise TopicError(f"filter {pattern!r}: '+' must be a whole level")
    return pattern


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches the subscription filter ``pattern`` (MQTT 3.1.1 §4.7).

    ``+`` matches exactly one level (which may be empty), ``#`` matches the parent level and everything
    below it, and a filter starting with a wildcard never matches a topic starting with ``$``.
    """
    check_topic_filter(pattern)
    if topic.startswith("$") and pattern[:1] in ("+", "#"):
        return False
    want, have = pattern.split("/"), topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True
        if index >= len(have):
            return False
        if level != "+" and level != have[index]:
            return False
    return len(want) == len(have)


def check_prefix_template(template: str) -> str:
    """``topic_prefix``: a topic name once ``{device_id}`` is filled in, with no leading or trailing slash.

    ``{device_id}``, when present, must be a whole level so that admin tools can replace it with ``+``.
    """
    levels = template.split("/")
    if template.count(DEVICE_PLACEHOLDER) > 1:
        raise TopicError("topic_prefix may contain {device_id} at most once")
    if DEVICE_PLACEHOLDER in template and DEVICE_PLACEHOLDER not in levels:
        raise TopicError("topic_prefix: {device_id} must be a whole level, e.g. 'clinic/{device_id}'")
    if "" in levels:
        raise TopicError("topic_prefix must not start or end with '/' or contain '//'")
    if template.startswith("$"):
        raise TopicError("topic_prefix must not start with '$' (reserved for the broker)")
    rest = template.replace(DEVICE_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise TopicError("topic_prefix: the only placeholder is {device_id}")
    check_topic_name(template.replace(DEVICE_PLACEHOLDER, "x"))
    return template


def device_prefix(template: str, device_id: str) -> str:
    return template.replace(DEVICE_PLACEHOLDER, device_id)


def all_devices_prefix(template: str) -> str:
    """The prefix as a filter matching every device (``edge/+``); admin tools subscribe to it."""
    return template.replace(DEVICE_PLACEHOLDER, "+")


def device_of(template: str, topic: str) -> str | None:
    """The device id in ``topic`` under ``template`` (``edge/abc/status`` -> ``abc``), or None."""
    levels = template.split("/")
    if DEVICE_PLACEHOLDER not in levels or not topic_matches(all_devices_prefix(template) + "/#", topic):
        return None
    return topic.split("/")[levels.index(DEVICE_PLACEHOLDER)] or None


@dataclass(frozen=True)
class Topics:
    """The topics of one device."""

    prefix: str
    fleet_cmd: str

    @classmethod
    def for_device(cls, template: str, device_id: str, fleet_topic: str) -> "Topics":
        return cls(check_topic_name(device_prefix(template, device_id)), check_topic_name(fleet_topic))

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/telemetry"

    @property
    def results(self) -> str:
        return f"{self.prefix}/results"

    @property
    def cmd(self) -> str:
        return f"{self.prefix}/cmd"

    @property
    def cmd_reply(self) -> str:
        return f"{self.prefix}/cmd/reply"


def discovery_topic(discovery_prefix: str, device_id: str, sensor: str) -> str:
    """Home Assistant MQTT discovery: ``<discovery_prefix>/sensor/<node_id>/<object_id>/config``."""
    return f"{discovery_prefix}/sensor/edge_{device_id}/{sensor}/config"
