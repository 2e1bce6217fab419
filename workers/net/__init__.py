"""The network component's parts (the worker is workers/network.py).

    config   the worker's init args, checked            listener  the listening sockets, shards taking turns
    server   TCP connections, line framing, flow control rpc       JSON-RPC 2.0 messages in and out
    http     HTTP/1.1 connections on httptools           streamable  MCP's Streamable HTTP rules
    sessions the MCP sessions of HTTP clients            mcp       the methods, routed to session and pool
    batch    tool calls coalesced for the pool           bridge    calls to the tree from the asyncio loop
    tools    the tools: pool task functions and their schemas
"""
