"""The engine lease: one engine at a time on a store, until several can share executions safely.

`EngineLease` is a key (`engine`) in the KV bucket `Subjects.lease_bucket`, whose messages expire
`ttl` seconds after they are written (the bucket's max age; file storage, so a NATS server restart
keeps it). An engine process, before it opens its store:

1. `acquire()`: creates the key, which succeeds only if it does not exist (JetStream's expected
   last subject sequence 0). If another engine holds it, `StoreError` names that engine; with
   `wait`, `acquire` keeps trying until the holder's lease expires (it stopped renewing: it died).
2. `start_renewing()`: rewrites the key every `ttl / 3` seconds, each time on condition that it is
   still at the revision this engine wrote last. If that condition fails (the lease expired, since
   the engine could not renew it for `ttl` seconds, and maybe another engine took it), or no renewal
   succeeded for `ttl` seconds, the lease is lost: logged as critical, and `on_lost` is called; the
   engine must stop writing, since another engine may now run its executions.
   With `alive`, a renewal happens only while `alive()` says the engine is working: `serve` renews
   from its sidecar thread (`attune_actors.nats.sidecar`), so a busy engine loop does not lose the
   lease, and passes a check of the engine loop's heartbeat, so a wedged one does.
3. `release()` on a clean shutdown: stops renewing and deletes the key (if still its own), so the
   next engine starts at once instead of waiting for the expiry.

Limits: there is no fencing token on the store's writes: an engine paused for longer than `ttl`
(a stopped VM, a debugger) may write one more batch before its renewal notices that the lease is
lost. The lease is as durable as the bucket's storage and replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from attune_actors.errors import StoreError
from attune_actors.nats.subjects import Subjects

__all__ = ["LEASE_KEY", "EngineLease", "lease_holder"]

log = logging.getLogger(__name__)

LEASE_KEY = "engine"
_RETRY = 0.5  # seconds between attempts to take a held lease (acquire with wait)


class EngineLease:
    """An exclusive, expiring claim on a store; see the module doc.

    `holder` names this engine in the refusal another engine gets (make it unique and telling, such
    as `host:pid:random`). `ttl` applies to a bucket created here; an existing bucket keeps its own,
    which this lease then uses. `on_lost(reason)` is called (on the loop that renews) when the
    lease is lost while renewing. `alive()`, if given, is asked before each renewal; while it is
    false the lease is not renewed (and is lost `ttl` after the last renewal).
    """

    def __init__(
        self,
        js_or_nc: JetStreamContext | Client,
        subjects: Subjects,
        *,
        holder: str,
        ttl: float = 10.0,
        storage: str = "file",
        replicas: int = 1,
        on_lost: Callable[[str], Any] | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        if storage not in ("file", "memory"):
            raise ValueError(f"storage must be file or memory, not {storage!r}")
        self.js = js_or_nc.jetstream() if isinstance(js_or_nc, Client) else js_or_nc
        self.subjects = subjects
        self.bucket = subjects.lease_bucket
        self.holder = holder
        self.ttl = ttl
        self.storage = storage
        self.replicas = replicas
        self.on_lost = on_lost
        self.alive = alive
        self.renewals = 0  # successful renewals since acquire()
        self._kv: KeyValue | None = None
        self._revision = 0  # of the key as this engine last wrote it; 0: not held
        self._renewed_at = 0.0  # monotonic time of the last write that succeeded
        self._renewer: asyncio.Task[None] | None = None
        self._lost: str | None = None

    def __repr__(self) -> str:
        return f"EngineLease(bucket={self.bucket!r}, holder={self.holder!r}, ttl={self.ttl:g})"

    @property
    def held(self) -> bool:
        """Whether this engine holds the lease (as far as it knows)."""
        return self._revision > 0 and self._lost is None

    # -- acquire ---------------------------------------------------------------------------------

    async def acquire(self, *, wait: float = 0.0) -> None:
        """Take the lease; `StoreError` naming the holder if another engine holds it.

        With `wait` > 0, keeps trying for that many seconds (a dead engine's lease expires at most
        `ttl` after its last renewal).
        """
        if self.held:
            return
        kv = await self._bucket()
        deadline = time.monotonic() + wait
        while True:
            held_by = await self._try_create(kv)
            if held_by is None:
                self._lost = None
                self.renewals = 0
                log.info("engine lease taken by %s (bucket %s, ttl %g s)", self.holder, self.bucket, self.ttl)
                return
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"the store is in use by engine {held_by} (lease held, expires within {self.ttl:g} s); "
                    "stop that engine first, or, if it died, start this one again once its lease has "
                    f"expired (lease: key {LEASE_KEY!r} of the NATS KV bucket {self.bucket})"
                )
            await asyncio.sleep(min(_RETRY, self.ttl / 4, max(0.0, deadline - time.monotonic())))

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        try:
            try:
                kv = await self.js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                try:
                    kv = await self.js.create_key_value(
                        api.KeyValueConfig(
                            bucket=self.bucket,
                            description="attune-actors: the engine lease",
                            history=1,
                            ttl=self.ttl,
                            storage=api.StorageType(self.storage),
                            replicas=self.replicas,
                        )
                    )
                except nats.js.errors.BadRequestError:  # created meanwhile, maybe with another ttl
                    kv = await self.js.key_value(self.bucket)
            status = await kv.status()
        except (nats.errors.Error, OSError, TimeoutError) as e:
            raise self._error("reach", e) from None
        ttl = status.ttl or 0.0
        if ttl <= 0:
            raise StoreError(
                f"the engine lease bucket {self.bucket} has no TTL, so a dead engine's lease would never "
                "expire; delete the bucket (nats kv del) and start again"
            )
        if abs(ttl - self.ttl) > 1e-3:
            log.info("engine lease: bucket %s has a ttl of %g s, not %g: using it", self.bucket, ttl,
                     self.ttl)
            self.ttl = ttl
        self._kv = kv
        return kv

    def _error(self, verb: str, exc: BaseException) -> StoreError:
        return StoreError(f"cannot {verb} the engine lease (bucket {self.bucket}): {_describe(exc)}")

    def _value(self) -> bytes:
        return json.dumps(
            {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
             "renewed_at": time.time()}
        ).encode()

    async def _try_create(self, kv: KeyValue) -> str | None:
        """Create the key; None when done, else who holds it."""
        for _ in range(3):
            try:
                self._revision = await kv.create(LEASE_KEY, self._value())
                self._renewed_at = time.monotonic()
                return None
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            except (nats.errors.Error, OSError, TimeoutError) as e:
                raise self._error("take", e) from None
            try:
                entry = await kv.get(LEASE_KEY)
            except nats.js.errors.KeyNotFoundError:
                continue  # it expired or was released between the two calls: try again
            except (nats.errors.Error, OSError, TimeoutError) as e:
                raise self._error("read", e) from None
            return _holder(entry.value)
        return "(unknown: the lease keeps changing hands)"

    # -- renew -----------------------------------------------------------------------------------

    async def start_renewing(self, on_lost: Callable[[str], Any] | None = None) -> None:
        """Renew the lease every `ttl / 3` s in a task until `release()` or until it is lost."""
        if not self.held:
            raise StoreError("the engine lease is not held: acquire() it first")
        if on_lost is not None:
            self.on_lost = on_lost
        if self._renewer is None or self._renewer.done():
            loop = asyncio.get_running_loop()
            self._renewer = loop.create_task(self._renew_loop(), name="attune-engine-lease")

    async def renew(self) -> None:
        """Renew once now; `StoreError` if the lease is lost (another holder, or it expired)."""
        kv = self._kv
        if kv is None or not self._revision:
            raise StoreError("the engine lease is not held")
        try:
            self._revision = await kv.update(LEASE_KEY, self._value(), last=self._revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            holder = None
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                holder = _holder((await kv.get(LEASE_KEY)).value)
            raise _Lost(
                f"the engine lease of {self.holder} was lost: "
                + (f"engine {holder} holds it now" if holder else "it expired or was deleted")
            ) from None
        self._renewed_at = time.monotonic()
        self.renewals += 1

    async def _renew_loop(self) -> None:
        period = self.ttl / 3
        warned = False  # that the engine is not answering: once per silence
        while True:
            await asyncio.sleep(max(0.0, self._renewed_at + period - time.monotonic()))
            if self.alive is not None and not self.alive():
                silent_for = time.monotonic() - self._renewed_at
                if silent_for >= self.ttl:
                    self._declare_lost(
                        f"the engine lease of {self.holder} was given up: the engine has not "
                        f"answered for {silent_for:.1f} s"
                    )
                    return
                if not warned:
                    log.warning("engine lease: not renewed while the engine is not answering")
                    warned = True
                await asyncio.sleep(min(period / 3, max(0.0, self._renewed_at + self.ttl - time.monotonic())))
                continue
            warned = False
            try:
                await self.renew()
            except _Lost as e:
                self._declare_lost(str(e))
                return
            except (nats.errors.Error, OSError, TimeoutError) as e:
                silent_for = time.monotonic() - self._renewed_at
                if silent_for >= self.ttl:
                    self._declare_lost(
                        f"the engine lease of {self.holder} was lost: not renewed for {silent_for:.1f} s "
                        f"(ttl {self.ttl:g} s): {_describe(e)}"
                    )
                    return
                log.warning("engine lease: renewal failed (%s); retrying", _describe(e))
                await asyncio.sleep(min(period / 3, max(0.0, self._renewed_at + self.ttl - time.monotonic())))

    def _declare_lost(self, reason: str) -> None:
        self._lost = reason
        log.critical("%s; this engine must stop", reason)
        if self.on_lost is not None:
            try:
                self.on_lost(reason)
            except Exception:
                log.exception("engine lease: on_lost failed")

    # -- release ---------------------------------------------------------------------------------

    async def release(self) -> None:
        """Stop renewing and delete the lease if it is still this engine's. Harmless if not held."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        kv, revision, self._revision = self._kv, self._revision, 0
        if kv is None or not revision or self._lost is not None:
            return
        try:
            await kv.delete(LEASE_KEY, last=revision)
            log.info("engine lease released by %s", self.holder)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # no longer ours
        except (nats.errors.Error, OSError, TimeoutError) as e:
            log.warning("engine lease: not released (%s); it expires within %g s", _describe(e), self.ttl)


class _Lost(Exception):
    """The lease is no longer this engine's."""


async def lease_holder(js: JetStreamContext, subjects: Subjects) -> str | None:
    """Who holds the engine lease of `subjects.prefix` now (None: nobody)."""
    try:
        kv = await js.key_value(subjects.lease_bucket)
        return _holder((await kv.get(LEASE_KEY)).value)
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
        return None


def _holder(value: bytes | None) -> str:
    try:
        found = json.loads(value or b"")
    except ValueError:
        return repr(value)
    if not isinstance(found, dict):
        return repr(found)
    name = str(found.get("holder"))
    if found.get("host") is not None and found.get("pid") is not None:
        name += f" (pid {found['pid']} on {found['host']})"
    return name


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        text = exc.description
    return text or type(exc).__name__
