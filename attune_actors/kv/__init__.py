"""The key-value datastore, its secrets, and the masking that keeps secret values out of all output.

- `KVStore`: JSON values and Fernet-encrypted secrets in the data dir's SQLite file (`kv` table).
- `KVScope`: the `kv` object of templates (`kv.get`, `kv.get_secret`); revealed secrets are masked.
- `Masker`, `MaskingFilter`: replace secret values with `***` in data, text and log records.
- `attune_actors.kv.command`: the `attune-actors kv set|get|delete|list` command line.
"""

from attune_actors.kv.masking import MASK, Masker, MaskingFilter, ProcessMaskingFilter, default_masker
from attune_actors.kv.scope import KVReader, KVScope
from attune_actors.kv.secrets import generate_key
from attune_actors.kv.store import KVEntry, KVStore, validate_key

__all__ = [
    "MASK",
    "KVEntry",
    "KVReader",
    "KVScope",
    "KVStore",
    "Masker",
    "MaskingFilter",
    "ProcessMaskingFilter",
    "default_masker",
    "generate_key",
    "validate_key",
]
