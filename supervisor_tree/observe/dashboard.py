"""`supervise dashboard`: a web page on 127.0.0.1 with the tree drawn live (aiohttp, server-sent events).

Owns the HTTP side: the page (dashboard.html, no build step), a sampler thread that
reads the node once per interval, the event stream (RUN/events.jsonl, tailed), the
per-worker history behind the sparklines, and the two actions a page may take: kill a
worker and profile one (the flame graph is then served to the page).

    app = Dashboard(run_dir).app()
    aiohttp.web.run_app(app, host="127.0.0.1", port=7420)

Routes: GET / (the page), GET /api/snapshot (JSON), GET /api/stream (text/event-stream:
"snapshot" each interval, "report" per supervisor report), POST /api/kill/{worker},
POST /api/profile/{worker}?duration=S&engine=py-spy|yappi, GET /profiles/{name} (only
graphs this dashboard captured).  POSTs need the header `X-Supervise: 1`, which a
page of another origin cannot send without a CORS preflight that is never granted.
The node is read only through a Client (never imported); blocking client calls run
in threads, never in the event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from supervisor_tree.client import Client, ClientError
from supervisor_tree.observe.snapshot import Sampler, Snapshot

__all__ = ["Dashboard", "HISTORY"]

HISTORY = 120  # samples kept per worker for the sparklines
FIGURES = ("cpu", "rss", "call_rate", "mailbox")


class Dashboard:
    """One dashboard of one node.  `interval`: seconds between samples."""

    def __init__(self, run_dir: Path, interval: float = 1.0, profile_dir: Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.interval = interval
        self.profile_dir = profile_dir
        self.snapshot: dict[str, Any] | None = None
        self.error: str | None = None
        self.history: dict[str, dict[str, deque[float | None]]] = {}
        self.reports: deque[dict[str, object]] = deque(maxlen=200)
        self.graphs: dict[str, Path] = {}  # name -> a flame graph this dashboard captured
        self._sampler_pool = ThreadPoolExecutor(1, thread_name_prefix="dashboard-sampler")  # one thread: one Client
        self._action_pool = ThreadPoolExecutor(4, thread_name_prefix="dashboard-action")
        self._local = threading.local()
        self._subscribers: set[asyncio.Queue[tuple[str, str]]] = set()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/api/snapshot", self._get_snapshot)
        app.router.add_get("/api/stream", self._stream)
        app.router.add_post("/api/kill/{worker}", self._kill)
        app.router.add_post("/api/profile/{worker}", self._profile)
        app.router.add_get("/profiles/{name}", self._graph)
        app.router.add_get("/favicon.ico", _no_content)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        self._task = asyncio.create_task(self._poll())

    async def _stop(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._sampler_pool, self._close_client)
        self._sampler_pool.shutdown(wait=True)
        self._action_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ sampling (sampler thread)

    def _sample(self) -> tuple[dict[str, Any] | None, list[dict[str, object]], str | None]:
        try:
            sampler: Sampler | None = getattr(self._local, "sampler", None)
            if sampler is None:
                client = Client(self.run_dir, timeout=5.0)
                sampler = self._local.sampler = Sampler(client)
                self._local.client = client
            snap = sampler.sample()
        except ClientError as exc:
            self._close_client()
            return None, [], f"{exc}"
        fresh = [r for r in list(sampler.events.recent)[-200:] if int(r.get("seq") or 0) > self._last_seq]  # type: ignore[call-overload]
        if fresh:
            self._last_seq = int(fresh[-1].get("seq") or 0)  # type: ignore[call-overload]
        return self._record(snap), fresh, None

    _last_seq = 0

    def _close_client(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
        self._local.client = self._local.sampler = None
        self._last_seq = 0

    def _record(self, snap: Snapshot) -> dict[str, Any]:
        """The snapshot as the page gets it; appends each worker's figures to its history.

        The page keeps its own history from the snapshots it receives; `history` seeds it
        once, when the page connects (so each tick stays small with hundreds of workers).
        """
        present = set()
        for w in snap.workers:
            present.add(w.id)
            h = self.history.setdefault(w.id, {f: deque(maxlen=HISTORY) for f in FIGURES})
            for f in FIGURES:
                value = getattr(w, f)
                h[f].append(None if value is None else float(value))
        for gone in set(self.history) - present:
            del self.history[gone]
        return snap.as_json() | {"tree": snap.tree}

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = time.monotonic()
            snap, reports, error = await loop.run_in_executor(self._sampler_pool, self._sample)
            self.error = error
            if snap is not None:
                self.snapshot = snap
            for rec in reports:
                self.reports.append(rec)
                self._publish("report", json.dumps(rec, default=str))
            self._publish("snapshot", json.dumps(self._payload(), default=str))
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    def _payload(self, history: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"snapshot": self.snapshot, "error": self.error, "at": time.time()}
        if history:
            out["history"] = {wid: {f: list(v) for f, v in h.items()} for wid, h in list(self.history.items())}
        return out

    def _publish(self, kind: str, data: str) -> None:
        for q in list(self._subscribers):
            if q.qsize() < 100:  # a page that stopped reading loses updates, never the server's memory
                q.put_nowait((kind, data))

    # ------------------------------------------------------------------ routes

    async def _page(self, request: web.Request) -> web.Response:
        html = resources.files("supervisor_tree.observe").joinpath("dashboard.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def _get_snapshot(self, request: web.Request) -> web.Response:
        return web.json_response(self._payload(history=True) | {"reports": list(self.reports)},
                                 dumps=lambda v: json.dumps(v, default=str))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._subscribers.add(q)
        try:
            for rec in list(self.reports):
                await resp.write(_sse("report", json.dumps(rec, default=str)))
            await resp.write(_sse("snapshot", json.dumps(self._payload(history=True), default=str)))
            while True:
                kind, data = await q.get()
                await resp.write(_sse(kind, data))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._subscribers.discard(q)
        return resp

    async def _kill(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]

        def kill() -> dict[str, Any]:
            with Client(self.run_dir, timeout=5.0) as c:
                return c.kill(worker, "KILL")

        return await self._action(kill)

    async def _profile(self, request: web.Request) -> web.Response:
        worker = request.match_info["worker"]
        try:
            duration = float(request.query.get("duration", "3"))
        except ValueError:
            return _error(400, f"duration must be a number of seconds; got {request.query.get('duration')!r}")
        if not 0 < duration <= 60:
            return _error(400, f"duration must be in (0, 60] seconds; got {duration:g}")
        engine = request.query.get("engine", "py-spy")
        if engine not in ("py-spy", "yappi"):
            return _error(400, f"engine must be py-spy or yappi; got {engine!r}")

        def capture() -> dict[str, Any]:
            kwargs: dict[str, Any] = {"engine": engine, "duration": duration, "fmt": "svg"}
            if self.profile_dir is not None:
                kwargs["profiles_dir"] = str(self.profile_dir)
            with Client(self.run_dir, timeout=10.0) as c:
                result = c.profile(worker, **kwargs)
            path = Path(result.path)
            self.graphs[path.name] = path
            return {"worker": worker, "path": str(path), "url": f"/profiles/{path.name}", "samples": len(result.stacks)}

        return await self._action(capture)

    async def _action(self, fn: Any) -> web.Response:
        loop = asyncio.get_running_loop()
        try:
            value = await loop.run_in_executor(self._action_pool, fn)
        except ClientError as exc:
            return _error(409, str(exc))
        except Exception as exc:  # noqa: BLE001 - the page shows the one-line reason (e.g. a profiler error)
            return _error(500, f"{type(exc).__name__}: {exc}")
        return web.json_response(value, dumps=lambda v: json.dumps(v, default=str))

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        path = self.graphs.get(request.match_info["name"])
        if path is None or not path.is_file():
            return _error(404, "no such flame graph captured by this dashboard")
        return web.FileResponse(path, headers={"Content-Type": "image/svg+xml", "Cache-Control": "no-store"})


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _sse(kind: str, data: str) -> bytes:
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Actions only from this dashboard's own page: a custom header, and a matching Origin when one is sent."""
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if request.headers.get("X-Supervise") != "1" or (origin and origin != f"{request.scheme}://{request.host}"):
            return _error(403, "actions need the dashboard's own page (header X-Supervise: 1, same origin)")
    resp: web.StreamResponse = await handler(request)
    return resp
