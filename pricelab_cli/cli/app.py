"""The `pricelab` entry point: run one command and map what it raised to the exit code of the contract, once."""

from __future__ import annotations

import copy
import os
import sys
import warnings

import typer

from pricelab_cli import stopping
from pricelab_cli._lazy import lazy
from pricelab_cli.cli.registry import app

# Each command file registers its command on import; `pricelab --help` lists them in this order.
# isort: off
from pricelab_cli.cli.commands import design, assign, hpte, spillover_graph, cluster, ipw, power, report  # noqa: F401
from pricelab_cli.cli.commands import simulate, monitor, elasticity  # noqa: F401

# isort: on
from pricelab_cli.cli.run import ACTIVE, name_the_file, show_warning
from pricelab_cli.console import error
from pricelab_cli.errors import PricelabError, PricelabWarning

# Loaded when a command first needs them: help, --version and `design` never do.
io = lazy("pricelab_cli.io")


def _show_click_error(exc: Exception) -> None:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        # `pricelab` alone: the commands to choose from, and what went wrong in words.
        sys.stderr.write(ctx.get_help() + "\n\n")
        error("no command given; pick one of the commands above.")
        return
    usage = f"{ctx.get_usage()}\nTry '{ctx.command_path} --help' for help.\n" if ctx is not None else ""
    sys.stderr.write(usage)
    error(message)


def _stopped(what: str, code: int) -> int:
    """A run ended by a signal: its workers end too, and one line says what became of it."""
    stopping.end_workers()
    if io.LAST_COMMIT.done:
        error(f"stopped by {what} after its outputs were committed.")
    else:
        error(f"stopped by {what}; nothing was written (existing outputs are unchanged).")
    return code


def command_for(args: list[str]):
    """The click command for this command line. A run names its command first, so only that
    command's options are built (building all eleven costs about 0.1 s a run); help, typos
    and the bare program get the whole group, with its command list and suggestions."""
    first = args[0] if args else ""
    if first.startswith("-"):
        return typer.main.get_command(app)
    commands = [c for c in app.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == first]
    groups = [g for g in app.registered_groups if g.name == first]
    if not commands and not groups:
        return typer.main.get_command(app)
    one = copy.copy(app)
    one.registered_commands, one.registered_groups = commands, groups
    return typer.main.get_command(one)


def main(argv: list[str] | None = None) -> None:
    """Run pricelab and exit with the code of the command-line contract."""
    args = sys.argv[1:] if argv is None else list(argv)
    ACTIVE.argv = [str(a) for a in args]
    verbose = "--verbose" in args
    code = 0
    with warnings.catch_warnings():
        warnings.simplefilter("always", PricelabWarning)
        if not verbose:
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.showwarning = show_warning
        try:
            command = command_for(args)
            # Every output of the run is committed together at its end, or none is; SIGTERM
            # and SIGHUP unwind the run as Ctrl-C does.
            with stopping.stoppable(), io.output_transaction():
                result = command.main(args=args, prog_name="pricelab", standalone_mode=False)
                stopping.raise_if_received()  # a stop a library swallowed: still nothing is committed
            code = result if isinstance(result, int) else 0
        except PricelabError as exc:
            if verbose:
                import traceback

                traceback.print_exc()
            error(name_the_file(exc, ACTIVE.argv))
            code = exc.exit_code
        except typer.TyperException as exc:  # the parser's usage errors (exit 2)
            _show_click_error(exc)
            code = getattr(exc, "exit_code", 2)
        except typer.Abort as exc:
            # The parser turns an EOFError it meets into a silent Abort.
            cause = exc.__cause__
            error(f"the run was aborted ({type(cause).__name__}: {cause})" if cause else "the run was aborted")
            code = 1
        except BrokenPipeError:
            # A reader such as `head` closed the pipe: that is a normal end for a filter.
            # Point stdout at /dev/null so the interpreter's final flush does not fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = 0
        except KeyboardInterrupt:  # one that arrived before the handlers were in place
            code = _stopped("SIGINT", 130)
        except stopping.Stopped as exc:
            code = _stopped(exc.name, exc.exit_code)
        except Exception as exc:  # anything unforeseen: one line, traceback only on request
            stop = stopping.behind(exc)
            if stop is not None:  # a signal met inside a library's C code, which wrapped it
                code = _stopped(stop.name, stop.exit_code)
            else:
                if verbose:
                    import traceback

                    traceback.print_exc()
                error(f"{type(exc).__name__}: {exc} (run again with --verbose for the traceback)")
                code = 1
        finally:
            ACTIVE.reporter = None
    sys.exit(code)
