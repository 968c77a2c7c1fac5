"""Where training's numbers and pictures go: one small writer interface.

The stage loop writes to a `MetricWriter`: a stage's scalars at an iteration,
event records (`stage_done`, `run_done`, ...) and images. `JsonlWriter` appends
metrics.jsonl, in the record format other code reads (evaluation.read_train_seconds,
benchmarks); `TensorBoardWriter` writes TensorBoard event files into the run
directory, tags prefixed by the stage (`stage_02/rec`, `stage_02/samples`);
`MultiWriter` sends to several. `make_writer(workdir, log)` builds a run's.

TensorBoard files are written with tensorboardX, imported only when a run asks for
them (`log.tensorboard`): it needs neither TensorFlow nor PyTorch (numpy and
protobuf only), writes the event format TensorBoard reads, and is maintained.
flax.metrics.tensorboard and clu's writers need TensorFlow, torch.utils.tensorboard
needs PyTorch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from agan_jax import image_io
from agan_jax.errors import UserError
from agan_jax.settings import LogSettings
from agan_jax.train.log import append_jsonl

METRICS_FILE = "metrics.jsonl"


def stage_tag(stage: int, name: str) -> str:
    """The TensorBoard tag of a stage's quantity: 'stage_03/d_loss'."""
    return f"stage_{int(stage):02d}/{name}"


class MetricWriter(Protocol):
    """What the stage loop writes to."""

    def scalars(self, stage: int, step: int, values: Mapping[str, float]) -> None:
        """A stage's scalars after `step` iterations of it."""

    def record(self, record: Mapping) -> None:
        """An event record ({'event': 'stage_done', 'stage': s, ...})."""

    def image(self, stage: int, step: int, tag: str, image: np.ndarray) -> None:
        """An HWC image (C = 1 or 3, values in [-1, 1]) of a stage."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """metrics.jsonl: {'stage', 'iter', **scalars} lines and event records as
    given. Images are not written (the stage grids are PNG files beside it)."""

    def __init__(self, path: str):
        self.path = path

    def scalars(self, stage: int, step: int, values: Mapping[str, float]) -> None:
        append_jsonl(self.path, {"stage": int(stage), "iter": int(step), **values})

    def record(self, record: Mapping) -> None:
        append_jsonl(self.path, dict(record))

    def image(self, stage: int, step: int, tag: str, image: np.ndarray) -> None:
        del stage, step, tag, image

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _tensorboardx():
    try:
        import tensorboardX
    except ImportError as e:
        raise UserError(
            f"log.tensorboard=True needs tensorboardX ({e}); install it with pip "
            "install -r requirements.txt, or train without TensorBoard files: "
            "--config.log.tensorboard=False"
        ) from None
    return tensorboardX


class TensorBoardWriter:
    """TensorBoard event files in `logdir` (tensorboardX). A new writer (a resumed
    run) adds a new event file beside the old ones; TensorBoard reads them as one
    run.

    Scalars: `stage_KK/<name>` at step = iteration of stage KK. Event records with a
    stage: each number as `<event>/<key>` at step = stage (`stage_done/noise_amp`,
    `stage_done/train_s`, ...). Images: `stage_KK/<tag>`. The event file is
    created at the first write (a resume that trains nothing adds none).
    """

    def __init__(self, logdir: str, flush_secs: int = 30):
        self.logdir, self.flush_secs = logdir, flush_secs
        self._module = _tensorboardx()  # a missing package fails before training
        self._w = None

    @property
    def _writer(self):
        if self._w is None:
            # The file name holds the second it was opened: a nanosecond suffix
            # keeps two writers of one second (a quick resume) apart and in order.
            self._w = self._module.SummaryWriter(
                logdir=self.logdir,
                flush_secs=self.flush_secs,
                filename_suffix=f".{time.time_ns()}",
            )
        return self._w

    def scalars(self, stage: int, step: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self._writer.add_scalar(stage_tag(stage, name), float(value), int(step))

    def record(self, record: Mapping) -> None:
        event = record.get("event")
        if not event or "stage" not in record:
            return
        for key, value in record.items():
            if key == "stage" or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                self._writer.add_scalar(
                    f"{event}/{key}", float(value), int(record["stage"])
                )

    def image(self, stage: int, step: int, tag: str, image: np.ndarray) -> None:
        pixels = image_io.to_uint8(np.asarray(image, np.float32))
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        self._writer.add_image(
            stage_tag(stage, tag), pixels, int(step), dataformats="HWC"
        )

    def flush(self) -> None:
        if self._w is not None:
            self._w.flush()

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None


class MultiWriter:
    """Writes everything to each of its writers, in order."""

    def __init__(self, *writers: MetricWriter):
        self.writers = writers

    def scalars(self, stage: int, step: int, values: Mapping[str, float]) -> None:
        for w in self.writers:
            w.scalars(stage, step, values)

    def record(self, record: Mapping) -> None:
        for w in self.writers:
            w.record(record)

    def image(self, stage: int, step: int, tag: str, image: np.ndarray) -> None:
        for w in self.writers:
            w.image(stage, step, tag, image)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


def make_writer(workdir: str, log: LogSettings | None) -> MetricWriter:
    """metrics.jsonl in `workdir`, and TensorBoard files there when
    `log.tensorboard` (UserError, naming the fix, without tensorboardX). `log`
    None (settings read back from a run.json): metrics.jsonl only."""
    jsonl = JsonlWriter(os.path.join(workdir, METRICS_FILE))
    if log is None or not log.tensorboard:
        return jsonl
    return MultiWriter(jsonl, TensorBoardWriter(workdir))
