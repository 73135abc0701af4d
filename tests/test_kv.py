"""The key-value datastore on a real SQLite file: values, secrets at rest, keys, threads, scope."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

from attune_actors.errors import ConfigError, NotFoundError, ParameterError, StoreError
from attune_actors.kv import MASK, KVEntry, KVScope, KVStore, Masker, generate_key

SECRET = "s3cr3t-Value-that-must-not-leak"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "attune.db"


@pytest.fixture
def store(db: Path) -> Iterator[KVStore]:
    with KVStore(db) as s:
        yield s


def raw_bytes(db: Path) -> bytes:
    """Everything SQLite has written for `db`: the file, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


# --- plain values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["text", "", "ünïcødé ✓", 0, -7, 3.25, True, False, None, [1, "a", None], {"a": {"b": [1, 2]}}],
)
def test_values_round_trip_as_json(store: KVStore, value: Any) -> None:
    store.set("some.key", value)
    assert store.get("some.key") == value
    assert type(store.get("some.key")) is type(value)


def test_missing_key_gives_the_default(store: KVStore) -> None:
    assert store.get("absent") is None
    assert store.get("absent", default=False) is False
    assert store.get("absent", {"d": 1}) == {"d": 1}


def test_set_replaces_and_delete_reports_whether_the_key_existed(store: KVStore) -> None:
    store.set("k", 1)
    store.set("k", [2])
    assert store.get("k") == [2]
    assert store.delete("k") is True
    assert store.delete("k") is False
    assert store.get("k", "gone") == "gone"


def test_list_is_sorted_filters_by_exact_prefix_and_masks_secrets(store: KVStore) -> None:
    before = datetime.now(UTC)
    for key in ("b.two", "a.one", "a.two", "A.upper", "a%x", "a_y", "ab"):
        store.set(key, key.upper())
    store.set("a.secret", SECRET, secret=True)

    assert [e.key for e in store.list()] == sorted(
        ["b.two", "a.one", "a.two", "A.upper", "a%x", "a_y", "ab", "a.secret"]
    )
    # The prefix is literal and case-sensitive (no LIKE wildcards, no case folding).
    assert [e.key for e in store.list("a.")] == ["a.one", "a.secret", "a.two"]
    assert [e.key for e in store.list("a%")] == ["a%x"]
    assert [e.key for e in store.list("a_")] == ["a_y"]
    assert store.list("zzz") == []

    entries = {e.key: e for e in store.list("a.")}
    assert entries["a.one"].value == "A.ONE"
    assert not entries["a.one"].secret
    assert entries["a.secret"] == KVEntry("a.secret", MASK, True, entries["a.secret"].updated_at)
    for e in entries.values():
        assert e.updated_at.tzinfo is not None
        assert before - timedelta(seconds=1) <= e.updated_at <= datetime.now(UTC)
    assert entries["a.secret"].to_dict() == {
        "key": "a.secret",
        "value": MASK,
        "secret": True,
        "updated_at": entries["a.secret"].updated_at.isoformat(),
    }


def test_entry_shows_one_key_like_list(store: KVStore) -> None:
    store.set("plain", {"x": 1})
    store.set("hidden", SECRET, secret=True)
    assert store.entry("absent") is None
    assert store.entry("plain") == store.list("plain")[0]
    hidden = store.entry("hidden")
    assert hidden is not None
    assert (hidden.value, hidden.secret) == (MASK, True)


def test_values_persist_across_reopen(db: Path) -> None:
    with KVStore(db) as first:
        first.set("flags.enabled", True)
        first.set("api.token", SECRET, secret=True)
    with KVStore(db) as second:
        assert second.get("flags.enabled") is True
        assert second.get_secret("api.token") == SECRET


def test_other_tables_share_the_file_and_wal_mode_is_on(db: Path) -> None:
    with KVStore(db) as store:
        store.set("k", "v")
        other = sqlite3.connect(db)
        try:
            other.execute("CREATE TABLE executions (id TEXT PRIMARY KEY)")
            other.execute("INSERT INTO executions VALUES ('e1')")
            other.commit()
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert other.execute("SELECT value, secret FROM kv").fetchall() == [('"v"', 0)]
        finally:
            other.close()
        assert store.get("k") == "v"


# --- keys and values that are refused -------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", " ", "a b", "a\tb", "trailing\n", "nul\x00", "x" * 257, 42, None]
)
def test_invalid_keys_are_refused_by_every_method(store: KVStore, key: Any) -> None:
    for call in (
        lambda: store.set(key, 1),
        lambda: store.get(key),
        lambda: store.get_secret(key),
        lambda: store.delete(key),
        lambda: store.entry(key),
    ):
        with pytest.raises(ParameterError, match="invalid key"):
            call()


@pytest.mark.parametrize(
    "key", ["a", "feature.flags.enabled", "path/like:key-1_2", "ключ", "x" * 256]
)
def test_valid_keys(store: KVStore, key: str) -> None:
    store.set(key, key)
    assert store.get(key) == key


@pytest.mark.parametrize("value", [object(), {1, 2}, float("nan"), float("inf"), b"bytes"])
def test_values_that_are_not_json_are_refused(store: KVStore, value: Any) -> None:
    with pytest.raises(ParameterError, match="'k' is not a JSON value"):
        store.set("k", value)
    with pytest.raises(ParameterError, match="'k' is not a JSON value"):
        store.set("k", value, secret=True)
    assert store.get("k") is None


# --- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [SECRET, {"user": "admin", "password": SECRET}, 123456789, None])
def test_secrets_round_trip(store: KVStore, value: Any) -> None:
    store.set("secret.value", value, secret=True)
    assert store.get_secret("secret.value") == value


def test_get_on_a_secret_gives_the_mask_and_get_secret_on_a_plain_value_is_refused(
    store: KVStore,
) -> None:
    store.set("hidden", SECRET, secret=True)
    store.set("plain", "visible")
    assert store.get("hidden") == MASK
    with pytest.raises(NotFoundError, match="'plain' is not a secret"):
        store.get_secret("plain")
    with pytest.raises(NotFoundError, match="no key 'absent'"):
        store.get_secret("absent")


def test_secrets_are_encrypted_at_rest(db: Path) -> None:
    with KVStore(db) as store:
        store.set("plain", "plain-marker-value")
        store.set("token", SECRET, secret=True)
        store.set("nested", {"password": "nested-secret-marker"}, secret=True)
        data = raw_bytes(db)
        # The scan sees what is stored in plain text, so not finding the secrets means something.
        assert b"plain-marker-value" in data
        assert SECRET.encode() not in data
        assert b"nested-secret-marker" not in data
        assert store.get_secret("token") == SECRET
    assert SECRET.encode() not in raw_bytes(db)


def test_key_file_is_created_0600_on_first_need_only(db: Path) -> None:
    key_file = db.parent / "secret.key"
    with KVStore(db) as store:
        store.set("plain", 1)
        store.get("plain")
        store.list()
        with pytest.raises(NotFoundError):
            store.get_secret("absent")
        assert not key_file.exists()
        old_umask = os.umask(0o277)  # the mode does not depend on the umask
        try:
            store.set("token", SECRET, secret=True)
        finally:
            os.umask(old_umask)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes().strip()) == 44  # url-safe base64 of 32 bytes


def test_explicit_key_file_and_configured_key(tmp_path: Path, db: Path) -> None:
    key_file = tmp_path / "keys" / "kv.key"
    with KVStore(db, key_file=key_file) as store:
        store.set("token", SECRET, secret=True)
    assert key_file.exists()
    assert not (db.parent / "secret.key").exists()

    key = generate_key()
    other_db = tmp_path / "other" / "attune.db"
    with KVStore(other_db, secret_key=key) as store:
        store.set("token", SECRET, secret=True)
    assert not (other_db.parent / "secret.key").exists()
    with KVStore(other_db, secret_key=key.decode()) as store:  # str works as well as bytes
        assert store.get_secret("token") == SECRET


def test_a_wrong_key_gives_a_clear_error(db: Path) -> None:
    with KVStore(db) as store:
        store.set("x", SECRET, secret=True)
    with KVStore(db, secret_key=generate_key()) as store:
        with pytest.raises(StoreError) as info:
            store.get_secret("x")
        assert str(info.value).startswith(
            "cannot decrypt secret 'x': the secret key does not match the one it was written with"
        )
        assert store.get("x") == MASK  # the rest of the store still works


@pytest.mark.parametrize("key", ["", "short", "not base64 at all!" * 3, b"\x00" * 32])
def test_an_invalid_configured_key_is_a_config_error(db: Path, key: str | bytes) -> None:
    with pytest.raises(ConfigError, match="configured secret key is not a valid Fernet key"):
        KVStore(db, secret_key=key)


def test_an_invalid_key_file_is_a_store_error_naming_it(db: Path) -> None:
    db.parent.mkdir(parents=True)
    key_file = db.parent / "secret.key"
    key_file.write_text("garbage\n")
    key_file.chmod(0o600)
    with KVStore(db) as store:
        store.set("plain", 1)  # plain values do not need the key
        message = f"secret key file {key_file} is not a valid Fernet key"
        with pytest.raises(StoreError, match=re.escape(message)):
            store.set("token", SECRET, secret=True)


def test_concurrent_first_use_of_the_key_file_agrees_on_one_key(db: Path) -> None:
    count = 8
    stores = [KVStore(db) for _ in range(count)]
    barrier = threading.Barrier(count)

    def write(i: int) -> None:
        barrier.wait()
        stores[i].set(f"secret.{i}", f"{SECRET}-{i}", secret=True)

    try:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(write, range(count)))
        for store in stores:
            for i in range(count):
                assert store.get_secret(f"secret.{i}") == f"{SECRET}-{i}"
    finally:
        for store in stores:
            store.close()
    assert [p.name for p in db.parent.iterdir() if p.name.endswith(".tmp")] == []


# --- the store as a resource ----------------------------------------------------------------------


def test_a_closed_store_refuses_calls_and_closing_twice_is_harmless(db: Path) -> None:
    store = KVStore(db)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.get("k")
    with pytest.raises(StoreError, match="is closed"):
        store.set("k", 1)


def test_a_file_that_is_not_a_database_is_a_store_error(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(StoreError, match=re.escape(f"cannot open the datastore {db}")):
        KVStore(db)


def test_a_directory_in_place_of_the_file_is_a_store_error(db: Path) -> None:
    db.mkdir(parents=True)
    with pytest.raises(StoreError, match="cannot open the datastore"):
        KVStore(db)


def test_concurrent_threads_on_one_store_and_on_two_connections(db: Path) -> None:
    threads, per_thread = 8, 25
    with KVStore(db) as shared, KVStore(db) as second:

        def work(t: int) -> None:
            store = shared if t % 2 else second
            for i in range(per_thread):
                key = f"t{t}.k{i}"
                store.set(key, {"t": t, "i": i}, secret=(i % 5 == 0))
                if i % 5 == 0:
                    assert store.get_secret(key) == {"t": t, "i": i}
                else:
                    assert store.get(key) == {"t": t, "i": i}
                store.list(f"t{t}.")

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        assert len(shared.list()) == threads * per_thread
        assert shared.get_secret("t3.k5") == {"t": 3, "i": 5}
        assert second.get("t4.k7") == {"t": 4, "i": 7}


# --- the `kv` template scope ----------------------------------------------------------------------


def test_scope_get_secret_registers_the_value_with_the_masker(store: KVStore) -> None:
    store.set("api.token", SECRET, secret=True)
    store.set("flag", True)
    masker = Masker()
    kv = KVScope(store, masker)

    assert kv.get("flag") is True
    assert kv.get("absent", default=0) == 0
    assert kv.get("api.token") == MASK
    assert not masker  # nothing revealed yet

    assert kv.get_secret("api.token") == SECRET
    assert masker.mask_text(f"Authorization: Bearer {SECRET}") == "Authorization: Bearer ***"
    with pytest.raises(NotFoundError, match="no key 'other'"):
        kv.get_secret("other")


def test_scope_works_in_the_jinja_sandbox_and_cannot_reach_the_store(store: KVStore) -> None:
    store.set("flags.new_feature", True)
    store.set("service.api_key", SECRET, secret=True)
    masker = Masker()
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
    kv = KVScope(store, masker)

    def render(source: str) -> str:
        return env.from_string(source).render(kv=kv)

    assert render("{{ kv.get('flags.new_feature', default=false) }}") == "True"
    assert render("{{ kv.get('flags.missing', default='off') }}") == "off"
    assert render("key={{ kv.get_secret('service.api_key') }}") == f"key={SECRET}"
    assert masker.mask_text(render("key={{ kv.get_secret('service.api_key') }}")) == "key=***"
    for source in ("{{ kv._store }}", "{{ kv._store.set('x', 1) }}", "{{ kv.set('x', 1) }}"):
        with pytest.raises(jinja2.TemplateError):
            render(source)
    assert store.get("x") is None
