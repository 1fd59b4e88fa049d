"""What the router knows about each model beyond its state: loads, failures,
and KV cache saves and restores. Plain data, filled in by the manager and
by KV persistence, read by every view through core/snapshot.py."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class KVTransfer:
    """One save (before a stop) or restore (after a start) of a model's slots."""

    at: float  # wall-clock time, seconds since the epoch
    ms: float  # how long the router waited for it
    slots: int
    tokens: int
    bytes: int


@dataclass
class KVStatus:
    """KV cache persistence of one model (core/kv_persistence.py fills it in)."""

    enabled: bool = False
    fingerprint: str | None = None
    saves: int = 0
    restores: int = 0
    last_save: KVTransfer | None = None
    last_restore: KVTransfer | None = None
    not_restored: int = 0  # files of this model left alone: made with other settings
    last_error: str | None = None


@dataclass
class ModelStatus:
    last_error: str | None = None
    exit_code: int | None = None
    failed: bool = False
    loads: int = 0
    last_load_s: float | None = None
    kv: KVStatus = field(default_factory=KVStatus)
