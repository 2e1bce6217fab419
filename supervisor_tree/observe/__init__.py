"""Observability: top, memwatch, health, queue analysis, Prometheus metrics, the console, the dashboard.

Every tool reads the node through `snapshot.Sampler` (a `Client`'s `status`, the workers'
heartbeat figures, psutil in the observer's own process) and `events.EventTail`
(RUN/events.jsonl); none imports the node (an import-linter contract).  The CLI
commands are in `cli/observe.py` and `cli/serve.py`.
"""
