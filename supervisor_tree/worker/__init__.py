"""The worker side: the behaviour users subclass, and the loop that runs one incarnation of it.

    behaviour    Worker, IGNORE, NOREPLY: what users subclass and return
    incarnation  the loop in the worker process: mailbox, control, dispatch, stop, exit
    heartbeat    the worker's figures and the thread that beats them to the node
    standby      what a process sets up before it knows its job (pre-forked standbys)
    spawn        SpawnRequest: what the launcher hands a new incarnation
    exits        exit codes and the reason file
"""

from supervisor_tree.worker.behaviour import IGNORE, NOREPLY, Worker

__all__ = ["Worker", "IGNORE", "NOREPLY"]
