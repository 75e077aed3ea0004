"""A TCP proxy in front of an external endpoint, for the chaos engine's
``slow_endpoint`` fault: transparent, except while ``slowed`` is set, when
every chunk the endpoint sends back is held ``delay`` seconds first.

It runs on a thread of its own (an asyncio loop) for the whole scenario, so
that actors configured to reach the endpoint through it keep their
connections before, during and after the fault; ``close`` ends it and every
connection it carries.
"""

from __future__ import annotations

import asyncio
import threading


class EndpointProxy:
    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], delay: float):
        self.listen, self.upstream, self.delay = listen, upstream, delay
        self.slowed = threading.Event()
        self.delayed = 0            # response chunks held while slowed
        self.connections = 0
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)

    def start(self) -> "EndpointProxy":
        """Listen; raises ``OSError`` when the address cannot be bound."""
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, *self.listen))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter):
        self.connections += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, upstream_w, slow=False),
                             self._pipe(upstream_r, client_w, slow=True),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    slow: bool) -> None:
        try:
            while data := await reader.read(65536):
                if slow and self.slowed.is_set():
                    self.delayed += 1
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
