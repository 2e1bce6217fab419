"""Observability: top, memwatch, health, queue analysis, Prometheus metrics, the dashboard.

Reads the node's status and the workers' heartbeat figures through the client; never
imports the node.
"""
