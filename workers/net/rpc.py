"""JSON-RPC 2.0 on newline-delimited JSON: one request or reply per line.

Owns turning one line into a validated `Request` (or the JSON-RPC error that
line deserves) and encoding replies as lines.  Knows nothing of sockets,
methods or the tree.

    >>> parse(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}')
    Request(id=1, method='ping', params=None, notification=False, response=False)
    >>> result_line(1, {})
    b'{"jsonrpc":"2.0","id":1,"result":{}}\\n'
    >>> try:
    ...     parse(b'{"jsonrpc": "1.0", "id": 7, "method": "ping"}')
    ... except RpcError as e:
    ...     print(e.code, e.id, e.message)
    -32600 7 Invalid Request: "jsonrpc" must be "2.0"; got '1.0'

Error codes: the five of the JSON-RPC 2.0 specification, and the server errors
of this server in -32010..-32019: inside the -32000..-32099 range JSON-RPC sets
aside for servers, and clear of the codes MCP and its SDKs use there (-32000
and -32001 are the SDK's own connection-closed and request-timeout, -32002 was
MCP's resource-not-found, -32020 onwards are the specification's).
Batches (a JSON array of requests) are answered with one -32600: MCP dropped
them in its 2025-06-18 revision and this server does not take them.  A JSON-RPC
response sent to the server (it sends no requests) is taken like a notification:
no reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NamedTuple

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Server errors (implementation-defined): the request was fine, the tree could not serve it.
UPSTREAM_UNAVAILABLE = -32010  # the worker that serves it exited or is not running
UPSTREAM_TIMEOUT = -32011  # it did not answer within the call timeout
OVERLOADED = -32012  # its queue is full, or this server holds max_connections already
SESSION_NOT_FOUND = -32013  # MCP over HTTP: the Mcp-Session-Id names no live session (HTTP 404)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_quote: Callable[[str], bytes]  # a str as a JSON string, UTF-8
_loads: Callable[[bytes | bytearray | memoryview], object]
try:  # the seed's "switch from jsx to jiffy": `pip install supervisor-tree[fast]`
    import orjson

    _quote = orjson.dumps  # 16x the stdlib on 1 KiB
    _loads = orjson.loads  # 3-4x the stdlib on a 1 KiB request
except ImportError:  # pragma: no cover - the stdlib answers the same, slower

    def _quote(text: str) -> bytes:
        return json.encoder.encode_basestring(text).encode()

    def _loads(line: bytes | bytearray | memoryview) -> object:
        return json.loads(bytes(line) if isinstance(line, memoryview) else line)


class RpcError(Exception):
    """A request that gets an error reply; `id` is the request's id when it could be read, else None."""

    def __init__(self, code: int, message: str, id: object = None, data: object = None) -> None:
        super().__init__(message)
        self.code, self.message, self.id, self.data = code, message, id, data

    def line(self) -> bytes:
        return error_line(self.id, self.code, self.message, self.data)


class Request(NamedTuple):
    """One message read (a NamedTuple, not a frozen dataclass: it is made once per request, at 3x the speed)."""

    id: object  # str, int or None; meaningless for a notification
    method: str
    params: dict[str, object] | list[object] | None
    notification: bool  # no "id" member: the client wants no reply
    response: bool = False  # a JSON-RPC response (result or error, no method): no reply either


def parse(line: bytes | bytearray | memoryview) -> Request:
    """The request on `line` (without its newline); raises RpcError with the code it deserves."""
    return request(loads(line))


def loads(line: bytes | bytearray | memoryview) -> object:
    """The JSON value on `line`; raises RpcError -32700 when it is not JSON (or not UTF-8)."""
    try:
        return _loads(line)
    except ValueError as exc:  # orjson's JSONDecodeError and UnicodeDecodeError are ValueErrors too
        raise RpcError(PARSE_ERROR, f"Parse error: {exc}") from None


def request(msg: object) -> Request:
    """The request a parsed JSON value is; raises RpcError -32600 when it is none."""
    if not isinstance(msg, dict):
        what = "a batch (JSON array), which this server does not take" if isinstance(msg, list) else type(msg).__name__
        raise RpcError(INVALID_REQUEST, f"Invalid Request: a request is a JSON object; got {what}")
    rid = msg.get("id")
    method = msg.get("method")
    params = msg.get("params")
    if type(method) is str and msg.get("jsonrpc") == "2.0" and (type(rid) is int or type(rid) is str) and (
            params is None or type(params) is dict):  # fmt: skip
        return Request(rid, method, params, False)  # the common request: nothing more to check
    notification = "id" not in msg
    if not (rid is None or isinstance(rid, str) or (isinstance(rid, (int, float)) and not isinstance(rid, bool))):
        raise RpcError(INVALID_REQUEST, f"Invalid Request: \"id\" must be a string, a number or null; got {rid!r}")
    version = msg.get("jsonrpc")
    if version != "2.0":
        raise RpcError(INVALID_REQUEST, f'Invalid Request: "jsonrpc" must be "2.0"; got {version!r}', rid)
    if method is None and "id" in msg and ("result" in msg or "error" in msg):
        return Request(rid, "", None, True, True)
    if not isinstance(method, str):
        raise RpcError(INVALID_REQUEST, f'Invalid Request: "method" must be a string; got {method!r}', rid)
    if params is not None and not isinstance(params, (dict, list)):
        raise RpcError(INVALID_REQUEST, f'Invalid Request: "params" must be an object or an array; got {params!r}', rid)
    return Request(rid, method, params, notification)


def result_line(id: object, result: object) -> bytes:
    return (_dumps({"jsonrpc": "2.0", "id": id, "result": result}) + "\n").encode()


def text_result_line(id: object, text: str, is_error: bool = False) -> bytes:
    """`result_line(id, {"content": [{"type": "text", "text": text}], "isError": is_error})`, built
    from pieces: the hot path of tools/call (a tenth of the cost of encoding the dict)."""
    rid = str(id) if type(id) is int else _dumps(id)
    return b"".join((b'{"jsonrpc":"2.0","id":', rid.encode(), b',"result":{"content":[{"type":"text","text":',
                     _quote(text), b'}],"isError":true}}\n' if is_error else b'}],"isError":false}}\n'))


def error_line(id: object, code: int, message: str, data: object = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return (_dumps({"jsonrpc": "2.0", "id": id, "error": error}) + "\n").encode()
