"""The ``tamperscope`` command. Each sub-command lives in ``tamperscope/commands/<name>.py`` and defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; this module discovers them.

Errors a user can cause (bad paths, bad images, unknown models) are raised as :class:`UserError` or
``ValueError``/``FileNotFoundError``/``KeyError`` and printed as one line with a non-zero exit code; a
:class:`UserError` about a parameter (its ``option``) gets the flag that sets it appended, e.g. ``(--tile-size)``.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import sys
import warnings

from . import commands
from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tamperscope",
                                     description="Image manipulation detection and localization.")
    parser.add_argument("--version", action="version", version="tamperscope 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        flags = {a.dest: a.option_strings[0] for a in reversed(p._actions) if a.option_strings}
        p.set_defaults(_run=mod.run, _flags=flags)
    return parser


def one_line(message: str) -> str:
    """The user's message of an error re-raised by a DataLoader worker (PyTorch prepends the worker's whole
    traceback; its last line is ``module.ErrorType: message``); other messages unchanged."""
    if "\nOriginal Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    return re.sub(r"^[\w.]+: ", "", last, count=1)


def _warning_line(command: str):
    """``warnings.formatwarning`` for users: ``tamperscope CMD: warning: message`` (no Python file and line)."""
    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"tamperscope {command}: warning: {one_line(str(message)).strip()}\n"
    return format_warning


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    formatwarning, warnings.formatwarning = warnings.formatwarning, _warning_line(args.command)
    try:
        return int(args._run(args) or 0)
    except (UserError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        flag = args._flags.get(getattr(exc, "option", None))  # the engine names parameters, the user gave flags
        print(f"tamperscope {args.command}: error: {one_line(str(msg))}{f' ({flag})' if flag else ''}",
              file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be created or read, a full disk: name the path
        where = exc.filename or ""
        print(f"tamperscope {args.command}: error: {where}{': ' if where else ''}{exc.strerror or exc}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tamperscope {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
