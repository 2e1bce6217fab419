"""The TCP load generator and the reference echo server, each run as its own process.

Owns the client side of the network benchmarks: many TCP connections from
127.0.0.x source addresses (so that 50K connections do not run out of
ephemeral ports), each sending one newline-delimited request, reading its
reply, and sending the next (closed loop), with a latency sample per reply;
and the reference server: a raw asyncio line echo in another process.  It
knows nothing of the tree; `bench.network` drives it.

    python -m supervisor_tree.bench.tcp_load echo 0          # prints {"port": N}, serves until stdin closes
    python -m supervisor_tree.bench.tcp_load echo 7500       # a fixed port: one of several sharing it (SO_REUSEPORT)
    python -m supervisor_tree.bench.tcp_load client '{"targets": {"ours": {"port": N, "conns": 1000}}, ...}'

A client opens its connections to every target (ours and the reference, so
that their rounds can alternate), prints {target: {"connected": n, "failed":
k}} on stdout and waits for orders on stdin, one per line: "run TARGET SECONDS
SAMPLES_FILE" runs one window and answers {"replies", "errors", "elapsed_s",
...} (the latency samples, int64 ns, go to SAMPLES_FILE); "ping TARGET" sends
a JSON-RPC ping on every connection and answers how many replied; "quit" (or
end of input) closes everything.  Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from array import array
from typing import Any

IP_BIND_ADDRESS_NO_PORT = 24  # Linux: choose the source port at connect, so ports are shared across peers
CONNECT_CONCURRENCY = 512  # connects in flight: under the listen backlog, so no SYN is dropped and retried
DRAIN_TIMEOUT = 30.0  # seconds a window waits for its last replies
CONNECT_TRIES = 3


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def request_line(i: int, size: int) -> bytes:
    """A JSON-RPC tools/call of `echo` exactly `size` bytes long, newline included."""
    head = '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"' % i  # noqa: UP031 - a template with literal braces
    tail = '"}}}\n'
    pad = max(0, size - len(head) - len(tail))
    return (head + "x" * pad + tail).encode()


# -- the reference server ----------------------------------------------------------------


class _Echo(asyncio.Protocol):
    """Echo whole lines back (a reply is a line, as the network component writes one)."""

    __slots__ = ("transport", "buf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"\n") + 1
        if end:
            self.transport.write(buf[:end])  # type: ignore[attr-defined]
        self.buf = buf[end:]


async def _serve_echo(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", port, backlog=4096, reuse_address=True,
                                      reuse_port=port != 0)  # a fixed port: shards of one reference server
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
    server.close()


# -- the client --------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    __slots__ = ("gen", "line", "transport", "buf", "t0", "lost")

    def __init__(self, gen: Load, line: bytes) -> None:
        self.gen, self.line = gen, line
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.t0 = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, line: bytes | None = None) -> None:
        self.t0 = time.perf_counter_ns()
        self.transport.write(line or self.line)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            self.gen.on_reply(self, buf[start:nl])
            start = nl + 1
        self.buf = buf[start:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.gen.lost += 1


class Load:
    """Connections and one window of closed-loop requests at a time.

    Subclasses (bench/http_load.py) change what a connection is (`connection`),
    what its request is (`request`), what counts as an error (`is_error`) and
    what happens once it is connected (`prepare`)."""

    def __init__(self, spec: dict[str, object]) -> None:
        self.spec = spec
        self.conns: list[Any] = []  # _Conn, or bench/http_load.py's
        self.lost = 0
        self.replies = self.errors = self.outstanding = 0
        self.sending = False
        self.samples = array("q")
        self.done: asyncio.Future[None] | None = None
        self.t_last = 0

    async def connect(self) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        n, size = int(self.spec["conns"]), int(self.spec.get("line_size", 1024))  # type: ignore[call-overload]
        sources = list(self.spec.get("sources", ["127.0.0.1"]))  # type: ignore[call-overload]
        host, port = str(self.spec.get("host", "127.0.0.1")), int(self.spec["port"])  # type: ignore[call-overload]
        base = int(self.spec.get("first_id", 0))  # type: ignore[call-overload]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failed = 0

        async def one(i: int) -> None:
            nonlocal failed
            async with gate:
                for _ in range(CONNECT_TRIES):  # a reset is retried, as a client would (a shard that filled up
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # closed its accept queue)
                    try:
                        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                        sock.bind((sources[i % len(sources)], 0))
                        sock.setblocking(False)
                        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), 30)
                        line = self.request(base + i, size)
                        _, conn = await loop.create_connection(lambda: self.connection(line), sock=sock)  # noqa: B023 - called within the iteration
                        self.conns.append(conn)
                        return
                    except (TimeoutError, OSError):
                        sock.close()
                failed += 1

        await asyncio.gather(*(one(i) for i in range(n)))
        for _ in range(CONNECT_TRIES):  # connections reset after their connect succeeded: connect them again
            lost = [i for i, c in enumerate(self.conns) if c.lost]
            if not lost:
                break
            self.conns = [c for c in self.conns if not c.lost]
            self.lost -= len(lost)
            await asyncio.gather(*(one(i) for i in lost))
        failed += await self.prepare()
        return {"connected": len(self.conns), "failed": failed + sum(c.lost for c in self.conns)}

    def request(self, i: int, size: int) -> bytes:
        return request_line(i, size)

    def connection(self, line: bytes) -> Any:
        return _Conn(self, line)

    async def prepare(self) -> int:
        """Work on the new connections before the windows (none here); returns how many failed."""
        return 0

    def is_error(self, reply: bytes) -> bool:
        return reply.startswith(b'{"jsonrpc":"2.0","id":') and b'"error":{' in reply[:60]

    def on_reply(self, conn: Any, line: bytes) -> None:
        now = time.perf_counter_ns()
        self.samples.append(now - conn.t0)
        self.replies += 1
        if self.is_error(line):
            self.errors += 1
        if self.sending:
            conn.send()
        else:
            self.outstanding -= 1
            if self.outstanding == 0 and self.done is not None and not self.done.done():
                self.t_last = now
                self.done.set_result(None)

    async def window(self, seconds: float, samples_file: str) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        self.replies = self.errors = self.t_last = 0
        self.samples = array("q")
        self.done = loop.create_future()
        live = [c for c in self.conns if not c.lost]
        self.sending = True
        t0 = time.perf_counter_ns()
        for c in live:
            c.send()
        await asyncio.sleep(seconds)
        self.sending = False
        self.outstanding = len(live)  # on_reply sends the next at once: each live connection has one out
        try:
            await asyncio.wait_for(self.done, DRAIN_TIMEOUT)
        except TimeoutError:
            pass
        elapsed = ((self.t_last or time.perf_counter_ns()) - t0) / 1e9
        with open(samples_file, "wb") as f:
            self.samples.tofile(f)
        return {"replies": self.replies, "errors": self.errors, "elapsed_s": elapsed, "lost": self.lost,
                "unanswered": self.outstanding}

    async def ping_all(self) -> dict[str, int]:
        """One request on every connection; how many were answered (within DRAIN_TIMEOUT)."""
        loop = asyncio.get_running_loop()
        live = [c for c in self.conns if not c.lost]
        self.sending = False
        self.replies = self.errors = 0
        self.outstanding = len(live)
        self.done = loop.create_future()
        for i, c in enumerate(live):
            c.send(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i)
        if live:
            try:
                await asyncio.wait_for(self.done, DRAIN_TIMEOUT)
            except TimeoutError:
                pass
        return {"answered": self.replies, "errors": self.errors, "asked": len(live)}

    def close(self) -> None:
        for c in self.conns:
            if c.transport is not None:
                c.transport.abort()


async def client(spec: dict[str, object], kind: type[Load] = Load) -> None:
    """`spec`: {"targets": {name: {"port": N, "conns": n, "first_id": k}}, "sources": [...], "line_size": 1024}:
    connect, say so on stdout, then carry out the orders read on stdin (the module docstring)."""
    targets: dict[str, dict[str, object]] = spec["targets"]  # type: ignore[assignment]
    raise_nofile(sum(int(t["conns"]) for t in targets.values()) + 256)  # type: ignore[call-overload]
    loop = asyncio.get_running_loop()
    loads = {name: kind({**spec, **t}) for name, t in targets.items()}
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({name: await load.connect() for name, load in loads.items()}), flush=True)
    try:
        while line := (await reader.readline()).decode().strip():
            cmd, *args = line.split()
            if cmd == "run":  # run TARGET SECONDS SAMPLES_FILE
                print(json.dumps(await loads[args[0]].window(float(args[1]), args[2])), flush=True)
            elif cmd == "ping":  # ping TARGET
                print(json.dumps(await loads[args[0]].ping_all()), flush=True)
            elif cmd == "quit":
                break
    finally:
        for load in loads.values():
            load.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("echo", "client"):
        print(__doc__, file=sys.stderr)
        return 2
    loop = new_loop()
    try:
        if argv[0] == "echo":
            raise_nofile(1 << 20)
            loop.run_until_complete(_serve_echo(int(argv[1])))
        else:
            loop.run_until_complete(client(json.loads(argv[1])))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
