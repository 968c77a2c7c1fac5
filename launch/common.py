"""What every launcher shares: flag parsing and errors as messages with exit 2.

A launcher calls `common.run(main)`. Bad input (a `UserError`, an unknown or
malformed flag or config key, a config file that is not Python) and file-system
errors (an `OSError`: a full disk, a read-only or unwritable path) print one
message naming the problem (and the path) and the fix and exit with status 2,
without a traceback. Ctrl-C prints one line (for training: which stages are
saved) and exits with status 130. Other exceptions (programming errors) keep
their traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

from agan_jax.errors import UserError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def fail(message: str) -> None:
    """Prints `error: message` on stderr and exits with status 2."""
    _fail(message)


def _config_path(argv: list[str]) -> str:
    """The --config file named in `argv` (without its :variant), or ''."""
    for arg in argv:
        if arg.startswith("--config="):
            return arg.split("=", 1)[1].split(":", 1)[0]
    return ""


def _unknown_key(e: BaseException, argv: list[str]) -> None:
    """The message of an unknown config key: the key, the flag that named it and
    ml_collections' suggestion, as plain text (no escaped quotes, no literal \\n)."""
    while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError)
        e = e.args[0]
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    text = text.replace("\\n", "\n")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [""]
    key = lines[0]
    for prefix in ("No such field:", "KeyError:"):
        key = key.removeprefix(prefix).strip()
    key = key.strip("\\\"' ")
    hint = " ".join(lines[1:]).replace('"', "'").rstrip("?")
    hint = hint[:1].lower() + hint[1:]
    flag = ""
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name.startswith("--config.") and name.rsplit(".", 1)[-1] == key:
            flag = f" ({name})"
            break
    _fail(
        f"unknown config key '{key}'{flag}: the config has no such field"
        + (f" ({hint}?)" if hint else "")
        + "; check the spelling against the config file (configs/default.py "
        "lists every field)"
    )


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
            _unknown_key(KeyError(str(name).rsplit(".", 1)[-1]), argv)
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
        _unknown_key(e, argv)
    except (SyntaxError, NameError, ImportError) as e:
        path = getattr(e, "filename", None) or _config_path(argv)
        where = f", line {e.lineno}" if getattr(e, "lineno", None) else ""
        _fail(
            f"--config={path} is not a Python config file ({type(e).__name__}"
            f"{where}: {getattr(e, 'msg', None) or e}); pass a .py config that "
            "defines get_config(), e.g. --config=configs/agan.py (YAML and text "
            "files are not read)"
        )
    except (ValueError, AttributeError, TypeError) as e:  # noqa: B014
        if isinstance(e, AttributeError) or "has no attribute" in str(e):
            _unknown_key(e, argv)
        _fail(f"bad config: {e}; check --config and the --config.* overrides")
    return []


def os_error_message(e: OSError) -> str:
    """A file-system error as one line: what failed, the path, and the fix."""
    path = e.filename or ""
    if e.filename2:
        path = f"{path} -> {e.filename2}"
    reason = e.strerror or str(e) or type(e).__name__
    fixes = {
        errno.ENOSPC: "free space on that disk and re-run the same command (a "
        "training resumes at its first unsaved stage)",
        errno.EDQUOT: "free space within your quota and re-run the same command",
        errno.EROFS: "that file system is read-only: pass a path on a writable one",
        errno.EACCES: "make it accessible (chmod) or pass another path",
        errno.EPERM: "make it accessible (chmod) or pass another path",
        errno.ENOENT: "check that the path exists",
        errno.ENOTDIR: "a file stands where a folder is expected: check the path",
        errno.EISDIR: "a folder stands where a file is expected: check the path",
        errno.EEXIST: "a file or folder of that name exists: pass another path",
    }
    fix = fixes.get(e.errno, "check the path and re-run the same command")
    return f"{reason}: {path}; {fix}" if path else f"{reason}; {fix}"


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
        except KeyboardInterrupt as e:
            print(str(e) or "interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except OSError as e:
            _fail(os_error_message(e))

    app.run(wrapped, flags_parser=_parse)
