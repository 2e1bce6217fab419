"""Chaos: fault injection under load, blast-radius checks, retry-policy tuning (`supervise chaos`, `tune-retry`).

Thin over the client and the control API: it never signals a process outside the tree.
"""
