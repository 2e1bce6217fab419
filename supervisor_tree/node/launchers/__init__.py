"""Launchers: how a worker incarnation gets a process, and how its end is reported.

    base        the Launcher protocol the node depends on, and the events it reads back
    local       the local launcher: the node's side of the fork server
    reaper      the node's children: pidfds in one epoll set, signals by pidfd, reaping
    server      one fork server process as the node holds it: forked, or executed afresh
    forkserver  the fork server process: standbys, forks through an intermediate
    orphans     socket files left behind; what a dead fork server left half-made
    osproc      titles, oom_score_adj, PR_SET_CHILD_SUBREAPER / PR_SET_PDEATHSIG

A launcher for another engine (Ray actors) goes beside `local` and implements `base.Launcher`.
"""
