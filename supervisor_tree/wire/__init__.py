"""What crosses a process boundary: frames and sockets (`channel`), run directories and endpoints (`rundir`).

Every other part names an endpoint only through this package, so a transport other
than ipc:// (tcp:// with CURVE, for a tree spread over hosts) changes code here and
nowhere else. Frame authentication lives here too.
"""
