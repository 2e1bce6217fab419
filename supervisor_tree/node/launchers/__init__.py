"""Launchers: how a worker incarnation gets a process, and how its end is reported.

    base   the Launcher protocol the node depends on, and the events it reads back
    local  the local launcher: the node's side of the fork server
    forkserver  the fork server process: standbys, fork, reap

A launcher for another engine (Ray actors) goes beside `local` and implements `base.Launcher`.
"""
