"""The node: the one process that runs a tree's supervisors and carries out what they decide.

    node        the loop: feeds events to otp.decide, executes the actions
    control     the control API served to the CLI and clients
    eventlog    events.jsonl and the events PUB socket
    timers      the node's timers
    life        stop requests, signals, and the node's ending in words
    systemd     systemd's notify protocol and the unit file
    heart       OTP's heart: a watcher that restarts the node when it dies abnormally
    launchers/  the only code that forks, signals and reaps workers (local fork server; Ray later)

Imports otp, worker (what a launcher runs in the child), wire and client (for the
profiler triggers); never the CLI.
"""
