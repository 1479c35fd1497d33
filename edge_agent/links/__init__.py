"""Adapters to the outside world: the kitchen's MQTT broker and the control plane's HTTP API."""
