"""MQTT side of the device: anonymised results through a durable outbox, health, and signed administration.

Importing this package is cheap and never imports paho: the settings schema uses the pure topic checks in
``edge.mqtt.topics``, and the daemon only imports ``edge.mqtt.publisher`` when ``mqtt.host`` is set.
"""
