"""What every launcher shares: flag parsing and errors as messages with exit 2.

A launcher calls `common.run(main)`. Bad input (a `UserError`, an unknown or
malformed flag or config key) prints one message naming the problem and the fix
and exits with status 2, without a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

from agan_jax.errors import UserError

EXIT_USAGE = 2


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def _parse(argv: list[str]) -> list[str]:
    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            # Config files load lazily: force the load so a bad file fails here.
            flags.FLAGS["config"].value.keys()
        return rest
    except flags.UnrecognizedFlagError as e:
        name = getattr(e, "flagname", "") or str(e)
        if str(name).startswith("config."):
            _fail(
                f"unknown config key --{name}: the config has no such field. Check the "
                "spelling against the config file (python -m launch.train "
                "--config=FILE --helpfull lists nothing for config fields; read "
                "configs/default.py)"
            )
        _fail(f"{e}; run with --helpfull for the list of flags")
    except flags.Error as e:
        msg = str(e)
        if "Traceback" in msg:  # a config file's get_config raised: keep its message
            lines = [ln for ln in msg.splitlines() if ln.strip()]
            msg = f"{lines[0]} {lines[-1]}"
        _fail(f"{msg}; check the flag's value (run with --helpfull for help)")
    except (FileNotFoundError, OSError) as e:
        msg = " ".join(str(e).split())
        _fail(f"{msg}; pass an existing config file, e.g. --config=configs/agan.py")
    except KeyError as e:
        _fail(
            f"unknown config key {e}: the config has no such field; check the "
            "spelling against the config file (configs/default.py lists every field)"
        )
    except (ValueError, AttributeError, TypeError) as e:  # noqa: B014
        if isinstance(e, AttributeError) or "has no attribute" in str(e):
            _fail(
                f"unknown config key {str(e).strip(chr(34) + chr(39))!r}: the config "
                "has no such field; check the spelling against the config file "
                "(configs/default.py lists every field)"
            )
        _fail(f"bad config: {e}; check --config and the --config.* overrides")
    return []


def enable_compilation_cache() -> None:
    """Persistent XLA compilation cache, so repeated launches skip compiling.

    Directory: $AGAN_JAX_CACHE (set it to 'off' to disable), default
    ~/.cache/agan_jax/xla.
    """
    path = os.environ.get("AGAN_JAX_CACHE", os.path.expanduser("~/.cache/agan_jax/xla"))
    if path == "off":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def run(main: Callable[[list[str]], None]) -> None:
    """absl app.run with our flag parser and UserError handling."""

    def wrapped(argv: list[str]) -> None:
        absl_logging.set_verbosity(absl_logging.WARNING)
        enable_compilation_cache()
        try:
            main(argv)
        except UserError as e:
            _fail(str(e))

    app.run(wrapped, flags_parser=_parse)
