"""What crosses a process boundary: frames and sockets (`channel`), run directories and endpoints (`rundir`).

Every other part names an endpoint only through this package, so a transport other
than ipc:// (tcp:// with CURVE, for a tree spread over hosts) changes code here and
nowhere else.  Frame authentication (`auth`: the run's key and the tag on every
frame), the control protocol (`requests`, JSON), the shape checks every receiver
runs before acting on a message (`shapes`) and the rate-limited record of dropped
frames (`dropped`) live here too.
"""
