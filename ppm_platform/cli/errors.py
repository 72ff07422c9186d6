"""Exit codes of every ``ppm`` command, the one-line :class:`PPMError`, and the click group that turns any
exception of a command into one line with a meaningful exit code (``--verbose`` adds the traceback)."""

from __future__ import annotations

import sys
import traceback

import click

#: Exit codes of every ``ppm`` command.
EXIT_OK = 0
EXIT_ERROR = 1          # unexpected error (a bug or an environment problem): rerun with --verbose
EXIT_USAGE = 2          # bad command line (click's own code)
EXIT_MISSING = 3        # a prerequisite is missing: dataset, artifacts, weights; or `ppm doctor` found a FAIL
EXIT_RUN_FAILED = 4     # the Dagster run (materialization) failed; its log file says which step
EXIT_BAD_INPUT = 5      # invalid input or configuration (bad value, unknown id, model/cache version mismatch)
EXIT_CODES = {EXIT_OK: "success", EXIT_ERROR: "unexpected error (rerun with --verbose for the traceback)",
              EXIT_USAGE: "usage error (bad option or argument)",
              EXIT_MISSING: "missing prerequisite (dataset, artifacts, weights) or a failed `ppm doctor` check",
              EXIT_RUN_FAILED: "the Dagster materialization failed",
              EXIT_BAD_INPUT: "invalid input or configuration (bad value, version mismatch)"}

#: the epilog of ``ppm --help`` and of every command's help
EPILOG = ("\b\nExit codes:\n" + "\n".join(f"  {c}  {t}" for c, t in EXIT_CODES.items()) +
          "\n\nConfiguration: PPM_* environment variables (PPM_DATA_DIR, PPM_DATASET, PPM_ARTIFACTS_DIR, "
          "PPM_PROFILE, PPM_MAX_ITEMS, PPM_CONFIG=<json/yaml>); see ppm_platform/config.py and docs/.")


class PPMError(click.ClickException):
    """A one-line CLI error with its exit code (see :data:`EXIT_CODES`)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(e: BaseException) -> int:
    """The exit code of an exception a command let through: missing file/module 3, bad value 5, else 1."""
    from pydantic import ValidationError

    if isinstance(e, (FileNotFoundError, ModuleNotFoundError)):
        return EXIT_MISSING
    if isinstance(e, (ValueError, ValidationError, KeyError)) or type(e).__name__ == "VersionMismatchError":
        return EXIT_BAD_INPUT
    return EXIT_ERROR


class PPMGroup(click.Group):
    """Click group that turns any exception of a command into one clear line (``error: <Type>: <message>``)
    with a meaningful exit code; ``--verbose`` prints the traceback first."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 -- the CLI boundary: every error becomes one line + exit code
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            msg = " ".join(str(e).split()) or repr(e)
            if len(msg) > 400 and not (ctx.obj or {}).get("verbose"):
                msg = msg[:400] + "... (--verbose for all)"
            raise PPMError(f"{type(e).__name__}: {msg}", exit_code_for(e)) from None
