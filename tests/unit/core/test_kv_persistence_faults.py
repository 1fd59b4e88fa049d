"""KV persistence when a child misbehaves: a stand-in upstream (a small aiohttp
app) that hangs, refuses or has nothing to save. The router must neither wait
past its timeout, nor replace a good file with nothing, nor keep a file
llama-server rejects."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from router.backend.child import Child
from router.backend.launch import LaunchPlan
from router.backend.logring import LogRing
from router.backend.slotfiles import model_files, slot_file_name
from router.catalogue.parse import parse_config
from router.core.kv_persistence import KVPersistence
from router.core.manager import ModelManager
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool


class StandIn:
    """Answers /slots like llama-server, with behaviour chosen per test."""

    def __init__(self, save: str = "ok", restore: str = "ok"):
        self.save_mode, self.restore_mode = save, restore
        self.calls: list[str] = []
        self.release = asyncio.Event()  # ends a hang when the test is over

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/slots", self.slots)
        app.router.add_post("/slots/{id}", self.action)
        return app

    async def slots(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": 0, "n_ctx": 512, "is_processing": False}])

    async def action(self, request: web.Request) -> web.Response:
        action = request.query["action"]
        filename = (await request.json())["filename"]
        self.calls.append(action)
        mode = self.save_mode if action == "save" else self.restore_mode
        if mode == "hang":
            await asyncio.wait_for(self.release.wait(), 60)
        if mode == "refuse":
            return web.json_response({"error": {"code": 400, "type": "invalid_request_error", "message":
                                      "Unable to restore slot: invalid slot save file"}}, status=400)
        if action == "save":
            n = 0 if mode == "empty" else 100
            # Like llama-server, an empty slot still writes a (header-only) file.
            (self.directory / filename).write_bytes(b"new" if n else b"header only")
            return web.json_response({"id_slot": 0, "filename": filename, "n_saved": n, "n_written": 3 if n else 44})
        return web.json_response({"id_slot": 0, "filename": filename, "n_restored": 100, "n_read": 3})


@pytest.fixture
async def setup(tmp_path):
    servers: list = []
    standins: list[StandIn] = []

    async def make(standin: StandIn, timeout: float = 30.0):
        standins.append(standin)
        standin.directory = tmp_path  # type: ignore[attr-defined]
        runner = web.AppRunner(standin.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        servers.append(runner)
        config = parse_config({"router": {"slot_save_path": str(tmp_path), "slot_save_timeout": timeout},
                               "models": {"m": {"path": "/x/m.gguf"}}})
        pool = UpstreamPool()
        servers.append(pool)
        manager = ModelManager(config, ChildClient(pool), 1)
        plan = LaunchPlan(("/nonexistent/llama-server", "--port", str(port), "--slot-save-path", str(tmp_path)),
                          {}, "/health", native=True)
        child = Child("m", plan, port, LogRing(10))
        child.ready.set()
        kv = KVPersistence(manager)
        kv.install()
        return manager, kv, child

    yield make
    for standin in standins:
        standin.release.set()
    for s in servers:
        await (s.close() if isinstance(s, UpstreamPool) else s.cleanup())


async def test_a_stuck_save_gives_up_at_the_timeout(setup, tmp_path):
    manager, kv, child = await setup(StandIn(save="hang"), timeout=0.5)
    t0 = time.monotonic()
    await kv.save("m", child)
    assert time.monotonic() - t0 < 3
    assert "gave up after 0.5 s" in manager.status["m"].kv.last_error
    assert not list(tmp_path.glob("*.partial")) and not model_files(tmp_path, "m")


async def test_an_empty_slot_never_overwrites_a_saved_conversation(setup, tmp_path):
    manager, kv, child = await setup(StandIn(save="empty"))
    fp = await kv._fingerprint(child)
    old = tmp_path / slot_file_name("m", fp, 0)
    old.write_bytes(b"old conversation")
    await kv.save("m", child)
    assert old.read_bytes() == b"old conversation"
    assert manager.status["m"].kv.saves == 0


async def test_a_save_replaces_the_file_and_reports_it(setup, tmp_path):
    manager, kv, child = await setup(StandIn())
    q = manager.events.subscribe()
    await kv.save("m", child)
    [f] = model_files(tmp_path, "m")
    assert f.path.read_bytes() == b"new" and f.fingerprint == await kv._fingerprint(child)
    event = q.get_nowait()
    assert (event["event"], event["data"]["tokens"], event["data"]["slots"]) == ("kv_saved", 100, 1)
    assert manager.status["m"].kv.last_save.tokens == 100


async def test_a_refused_restore_is_reported_and_the_load_goes_on(setup, tmp_path):
    manager, kv, child = await setup(StandIn(restore="refuse"))
    fp = await kv._fingerprint(child)
    bad = tmp_path / slot_file_name("m", fp, 0)
    bad.write_bytes(b"garbage")
    await kv.restore("m", child)  # must not raise: a failed restore is no failed load
    st = manager.status["m"].kv
    assert st.restores == 0 and "invalid slot save file" in st.last_error
    await kv.save("m", child)  # the next save of that slot replaces the bad file
    assert bad.read_bytes() == b"new"


async def test_only_files_with_the_childs_fingerprint_are_restored(setup, tmp_path):
    standin = StandIn()
    manager, kv, child = await setup(standin)
    fp = await kv._fingerprint(child)
    (tmp_path / slot_file_name("m", "f" * 16 if fp != "f" * 16 else "e" * 16, 0)).write_bytes(b"other")
    await kv.restore("m", child)
    assert standin.calls == [] and manager.status["m"].kv.not_restored == 1
    (tmp_path / slot_file_name("m", fp, 0)).write_bytes(b"mine")
    await kv.restore("m", child)
    assert standin.calls == ["restore"] and manager.status["m"].kv.restores == 1
