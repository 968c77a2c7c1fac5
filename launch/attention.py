"""Save a sample and the AGAN attention map C of every stage next to it.

python -m launch.attention --workdir=runs/agan_cpu --out=out/attention

Writes sample.png, attention_stage_SS.png (C in [0, 1]: white = the stage's new
content, black = the upsampled previous stage kept) and attention_strip.png.
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained AGAN run directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/attention).")


def main(argv: list[str]) -> None:
    del argv
    import jax

    from agan_jax import applications, checkpoint, sampling
    from agan_jax.errors import UserError

    if not _WORKDIR.value:
        raise UserError("--workdir is required: a trained run directory")
    sampler = sampling.Sampler(checkpoint.load_run(_WORKDIR.value))
    out = _OUT.value or os.path.join(_WORKDIR.value, "attention")
    paths = applications.save_attention(sampler, jax.random.key(_SEED.value), out)
    print(f"wrote {len(paths)} files to {out}")


if __name__ == "__main__":
    common.run(main)
