"""The `kv` object of templates: it reads the datastore, and every secret it reveals is masked.

`{{ kv.get('flags.new_feature', default=false) }}` and `{{ kv.get_secret('service.api_key') }}`
call the two public methods below; the store and the masker sit in private attributes, which
Jinja's sandbox refuses to reach, so a template can read the datastore but never write to it.
"""

from __future__ import annotations

from typing import Any, Protocol

from attune_actors.kv.masking import Masker

__all__ = ["KVReader", "KVScope"]


class KVReader(Protocol):
    """What `KVScope` reads from: `KVStore`, or any other store with the same two methods."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def get_secret(self, key: str) -> Any: ...


class KVScope:
    """The `kv` template scope over `store`; secrets it returns are added to `masker` first.

    Adding before returning means that whatever the template, the action or the engine later makes
    of the value (results, logs, events, snapshots, API output) is masked by that masker.
    """

    __slots__ = ("_masker", "_store")

    def __init__(self, store: KVReader, masker: Masker) -> None:
        self._store = store
        self._masker = masker

    def __repr__(self) -> str:
        return "<kv>"

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, `default` when there is none, `***` when it is a secret."""
        return self._store.get(key, default)

    def get_secret(self, key: str) -> Any:
        """The decrypted value of secret `key`, registered with the masker before it is returned."""
        value = self._store.get_secret(key)
        self._masker.add(value)
        return value
