"""The pure supervisor: OTP's supervisor behaviour as data plus decisions, no I/O.

    supervisor  decide(state, event, now) -> (state, actions): the one entry point
    state       the frozen state record of one supervisor and its children
    messages    events fed in (ChildStarted, ChildExited, ...) and actions out (Spawn, AskStop, ...)
    steps       the multi-step plans (stop in reverse order, then start in order)
    strategies  one_for_one, one_for_all, rest_for_one, simple_one_for_one as plans
    intensity   the restart window

Imports nothing of the package but `spec` (an import-linter contract in `make test`
keeps it so): no zmq, no pids, no clock of its own. The node feeds it and carries
out what it answers.
"""
