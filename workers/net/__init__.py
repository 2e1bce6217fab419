"""The network component's parts (the worker is workers/network.py).

    config   the worker's init args, checked          server  TCP connections, framing, flow control
    rpc      JSON-RPC 2.0 lines in and out             mcp     the methods, routed to session and pool
    batch    tool calls coalesced for the pool         bridge  calls to the tree from the asyncio loop
    tools    the tools: pool task functions and their schemas
"""
