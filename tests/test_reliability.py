"""Failures a demanding user meets: full disks, read-only runs, hand-edited files,
Ctrl-C, out-of-range settings. Each test fails without the fix it names."""

from __future__ import annotations

import errno
import logging
import os
import types

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.serialization import type_handlers

from agan_jax import checkpoint


def _fake_state(seed: int = 0):
    rng = np.random.default_rng(seed)
    arr = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return types.SimpleNamespace(
        g_vars={"w": arr(4, 4)},
        d_vars={"w": arr(3)},
        g_opt={"mu": arr(3)},
        d_opt={"mu": arr(3)},
        key=jax.random.key(seed),
        step=np.int32(7),
    )


def _save(store, stage: int, seed: int = 0) -> None:
    store.save_stage(
        stage, _fake_state(seed), np.zeros((1, 4, 4, 3), np.float32), 0.1, (4, 4)
    )


async def _disk_full(self, value, tspec, ts_context):
    """What TensorStore raises in Orbax's writer thread on a full disk."""
    raise ValueError(
        'RESOURCE_EXHAUSTED: Error writing "g_vars.w/0" in OCDBT database: Failed '
        "to write 64 bytes to file 20: No space left on device [os_error_code='28']"
    )


def test_disk_full_during_save_is_one_oserror_naming_the_stage(
    tmp_path, monkeypatch, caplog
):
    """A full disk during a checkpoint save: one OSError(ENOSPC) naming the
    stage's folder, no Orbax thread tracebacks logged, the saved stage intact and
    the unfinished one gone (so a re-run saves it)."""
    store = checkpoint.RunStore(str(tmp_path / "run"))
    _save(store, 0)
    monkeypatch.setattr(type_handlers.NumpyHandler, "_open_and_write", _disk_full)
    caplog.set_level(logging.WARNING)
    with pytest.raises(OSError) as info:
        _save(store, 1, seed=1)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == os.path.join(store.ckpt_dir, "1")
    noise = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert noise == [], [r.getMessage()[:80] for r in noise]
    assert sorted(os.listdir(store.ckpt_dir)) == ["0"]
    monkeypatch.undo()
    _save(store, 1, seed=1)  # the disk has room again: the same store saves
    assert store.finished_stages() == [0, 1]
    store.close()
    again = checkpoint.RunStore(store.workdir)
    np.testing.assert_array_equal(
        again.load_stage(0)["g_vars"]["w"], _fake_state(0).g_vars["w"]
    )
    again.close()


def test_other_save_errors_are_not_disguised(tmp_path, monkeypatch):
    """An Orbax failure that is not a file-system error keeps its own type."""

    async def broken(self, value, tspec, ts_context):
        raise ValueError("a bug, not a disk")

    store = checkpoint.RunStore(str(tmp_path / "run"))
    monkeypatch.setattr(type_handlers.NumpyHandler, "_open_and_write", broken)
    with pytest.raises(ValueError, match="a bug, not a disk"):
        _save(store, 0)
