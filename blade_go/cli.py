"""The `blade-go` command line, generated at run time from the spec registry.

Every command writes exactly one chaosblade Response (JSON) on stdout and exits 0 or 1 (always 0
under blade, which reads `success`: see chaosblade/conventions.py); the only exceptions are help
(-h/--help), `spec` and `server`. Usage errors become JSON too: unknown flag/command ->
CommandIllegal 49000, missing value -> ParameterLess 45000, a flag given twice -> 46000.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

import click

from . import __version__
from .chaosblade import conventions as cb
from .errors import BladeError, Code
from .redact import redact_argv
from .response import emit, fail, ok

log = logging.getLogger("blade_go")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_TRUE = cb.TRUE


class Respond(Exception):
    """Carries a command's Response out of click to main()."""

    def __init__(self, resp: dict):
        self.resp = resp


@contextlib.contextmanager
def _stdout_to_stderr():
    """While a command runs, anything printed (by us, libraries or child processes inheriting
    fd 1) goes to stderr, so stdout only ever carries the one JSON Response."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _respond(fn, *args, **kwargs):
    with _stdout_to_stderr():
        result = fn(*args, **kwargs)
    raise Respond(ok(result))


def _registry():
    from .registry import default_registry
    return default_registry()


# ---- create: create -> <target> -> <action>, all from the registry ----------------------

_METAVAR = {"int": "INT", "seconds": "SECONDS", "pid": "PID", "url": "URL", "string": "TEXT"}


class ActionCommand(click.Command):
    def __init__(self, target: str, spec):
        self.spec = spec
        params = []
        for f in spec.flags:
            help_text = f.desc + ("" if f.type in ("string", "bool") else f"; {f.expected()}")
            if f.required:
                help_text += " [required]"
            if f.default is not None:
                help_text += f" [default: {f.default}]"
            params.append(click.Option([f"--{f.name}", f.name.replace("-", "_")],
                                       is_flag=f.no_args, default=None, help=help_text,
                                       metavar=None if f.no_args else _METAVAR[f.type]))
        super().__init__(spec.name, params=params, callback=self._create,
                         help=spec.long_desc, short_help=spec.short_desc,
                         context_settings=CONTEXT)
        self.target = target

    def parse_args(self, ctx, args):
        if any(a in CONTEXT["help_option_names"] for a in args):
            return super().parse_args(ctx, args)
        cb.refuse_repeats(args, {f.name for f in self.spec.flags if not f.no_args})
        # chaosblade passes noArgs flags as --name=true|false; click flags take no value
        out = cb.normalize_bools(args, {f.name for f in self.spec.flags if f.no_args})
        return super().parse_args(ctx, out)

    def format_epilog(self, ctx, formatter):
        formatter.write_paragraph()
        formatter.write_heading("Examples")
        with formatter.indentation():
            for line in self.spec.example.splitlines():
                # the spec's examples are written for blade; here the command is blade-go's
                if line.startswith("blade create "):
                    line = "blade-go create " + line[len("blade create "):]
                formatter.write((" " * formatter.current_indent + line).rstrip() + "\n")

    def _create(self, **kwargs):
        from . import experiment
        by_param = {f.name.replace("-", "_"): f.name for f in self.spec.flags}
        flags = {by_param[k]: v for k, v in kwargs.items() if v is not None and v is not False}
        blade = cb.under_blade()
        if blade:
            flags.pop("endpoint", None)  # blade POSTs its own record to the endpoint
        with _stdout_to_stderr():
            result = experiment.create(self.target, self.spec.name, flags)
        warnings = paused = None
        if isinstance(result, dict) and "uid" in result:  # the result is always the uid
            warnings = result.get("warnings") or None
            paused = result.get("target_paused")
            result = result["uid"]
        for w in warnings or ():
            log.warning("create %s: %s", result, w)
        resp = ok(result, warnings=warnings, under_blade=blade)
        if paused is not None:  # how long blade-go stopped the target (blade ignores it)
            resp["target_paused"] = paused
        raise Respond(resp)


class TargetGroup(click.Group):
    def __init__(self, spec):
        self.spec = spec
        super().__init__(spec.name, help=spec.long_desc, short_help=spec.short_desc,
                         invoke_without_command=True, no_args_is_help=False,
                         context_settings=CONTEXT, callback=self._no_action)

    def list_commands(self, ctx):
        return list(self.spec.actions)

    def get_command(self, ctx, name):
        if name.startswith("-"):
            return None
        return ActionCommand(self.spec.name, self.spec.action(name))

    def _no_action(self):
        if click.get_current_context().invoked_subcommand is None:
            raise BladeError(Code.PARAMETER_LESS, "less parameter: action (one of "
                             + ", ".join(self.spec.actions) + ")")


class CreateGroup(click.Group):
    def list_commands(self, ctx):
        return list(_registry().targets)

    def get_command(self, ctx, name):
        if name.startswith("-"):
            return None
        return TargetGroup(_registry().target(name))


@click.group(context_settings=CONTEXT, help="Inject faults into running Go processes "
             "(a ChaosBlade executor). Every command prints one JSON Response.")
def cli():
    pass


@cli.group(cls=CreateGroup, invoke_without_command=True, no_args_is_help=False,
           context_settings=CONTEXT, help="Create an experiment: create <target> <action> "
           "[flags]; prints the experiment uid.")
def create():
    if click.get_current_context().invoked_subcommand is None:
        raise BladeError(Code.PARAMETER_LESS, "less parameter: target (one of "
                         + ", ".join(_registry().targets) + ")")


@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True,
                               "allow_extra_args": True},
             help="Destroy an experiment and restore the process: destroy <uid>. chaosblade's "
             "forms are accepted too: `destroy go <action> --uid=<uid> [flags]`, and destroy by "
             "matchers `destroy go <action> [--uid=unknown] --func F [flags]`, which destroys "
             "every live experiment of that action whose flags match and lists them.")
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
@click.option("--uid", default=None, help="Experiment uid (instead of the positional uid)")
@click.option("--debug", is_flag=True, help="Diagnostics to stderr and the log file")
def destroy(words, uid, debug):
    from . import experiment
    words = list(words)
    registry = _registry()
    if len(words) >= 2 and words[0] in registry.targets and not words[1].startswith("-"):
        target, action, rest = words[0], words[1], words[2:]
        if uid is None or uid == cb.UNKNOWN_UID:
            _respond(cb.destroy_by_matchers, target, action, rest)
        registry.target(target).action(action)  # an unknown action is refused, not ignored
    elif uid is None:
        if not words or words[0].startswith("-"):
            raise BladeError(Code.PARAMETER_LESS, "less parameter: uid (destroy <uid>, or "
                             "destroy go <action> --uid=<uid>)")
        if len(words) > 1:
            raise BladeError(Code.COMMAND_ILLEGAL, "unexpected argument(s) after the uid: "
                             + " ".join(words[1:]))
        uid = words[0]
    _respond(experiment.destroy, uid, debug=debug)


@cli.command(context_settings=CONTEXT, help="Show one experiment (status <uid>, with live facts)"
             ", list them (status --type create [--status S] [--limit N]), or show a process "
             "(status --pid P: its live experiments and the value bytes retained in it).")
@click.argument("uid", required=False)
@click.option("--type", "type_", default=None, help="Experiment type to list: create")
@click.option("--status", default=None, help="Only experiments in this status "
              "(Created, Success, Error, Destroyed)")
@click.option("--limit", default=None, help="At most this many experiments, newest first")
@click.option("--pid", default=None, help="A process: its live experiments and retained bytes")
@click.option("--debug", is_flag=True, help="Diagnostics to stderr and the log file")
def status(uid, type_, status, limit, pid, debug):
    from . import experiment
    if uid:
        _respond(experiment.status, uid, debug=debug)
    if pid is not None:
        _respond(experiment.process_status, pid)
    if type_ is None:
        raise BladeError(Code.PARAMETER_LESS, "less parameter: uid or --type create")
    _respond(experiment.list_status, type_, status, limit)


@cli.command(context_settings=CONTEXT, help="Print blade-go's version.")
def version():
    from .plugin_yaml import SPEC_VERSION
    raise Respond(ok({"version": __version__, "specVersion": SPEC_VERSION}))


@cli.command(context_settings=CONTEXT, help="Print the chaosblade plugin YAML "
             "(chaosblade-exec-go.yaml) generated from the specs.")
def spec():
    from .plugin_yaml import render_plugin_yaml
    click.echo(render_plugin_yaml(_registry()), nl=False)


@cli.command(context_settings=CONTEXT, help="Report what blade-go can see in a Go executable "
             "(functions, signatures, result locations, caves), without touching the process.")
@click.option("--pid", default=None, help="A running process")
@click.option("--binary", default=None, help="An executable file")
@click.option("--func", "func", default=None, help="Only this function")
@click.option("--signature", default=None,
              help="The function's Go type, for binaries without DWARF (needs --func)")
@click.option("--debug-binary", "debug_binary", default=None,
              help="The unstripped build of the same source, for binaries without DWARF")
@click.option("--debug", is_flag=True, help="Diagnostics to stderr and the log file")
def inspect(pid, binary, func, signature, debug_binary, debug):
    if (pid is None) == (binary is None):
        raise BladeError(Code.PARAMETER_LESS, "less parameter: exactly one of --pid, --binary")
    if pid is not None:
        if not (pid.isascii() and pid.isdigit()) or int(pid) <= 0:
            raise BladeError(Code.PARAMETER_ILLEGAL, f"illegal value {pid!r} for --pid: "
                             "expected a process id (positive integer)")
        pid = int(pid)
    try:
        from .inspector.report import inspect_report
    except Exception as e:
        raise BladeError(Code.HANDLER_EXEC_NOT_FOUND,
                         f"the inspector report is not available: {type(e).__name__}: {e}")
    _respond(inspect_report, pid=pid, binary=binary, func=func, signature=signature,
             debug_binary=debug_binary)


@cli.command(context_settings=CONTEXT, help="Check whether blade-go can work here (dlv, ptrace, "
             "capabilities, seccomp, the state directory, the kernel) and, with --pid, whether "
             "and how that process can be injected. Each failed check says what to do; nothing "
             "is attached or written.")
@click.option("--pid", default=None, help="A running process to check")
@click.option("--debug", is_flag=True, help="Diagnostics to stderr and the log file")
def check(pid, debug):
    if pid is not None:
        if not (pid.isascii() and pid.isdigit()) or int(pid) <= 0:
            raise BladeError(Code.PARAMETER_ILLEGAL, f"illegal value {pid!r} for --pid: "
                             "expected a process id (positive integer)")
        pid = int(pid)
    from .check import response
    with _stdout_to_stderr():
        resp = response(pid)
    raise Respond(resp)


@cli.group(context_settings=CONTEXT, help="Install blade-go into a chaosblade release, so that "
           "its `blade create go ...` reaches blade-go, or remove it again.")
def chaosblade():
    pass


@chaosblade.command("install", context_settings=CONTEXT, help="Merge blade-go's experiments "
                    "into the release's os spec and put a dispatcher at bin/chaos_os (target go "
                    "-> blade-go, the rest -> the real chaos_os). Idempotent; rerun after a "
                    "blade upgrade.")
@click.option("--home", required=True, help="The chaosblade release directory (holds blade)")
@click.option("--version", "version_", default=None,
              help="blade's version (default: from the release's yaml/ or `blade version`)")
@click.option("--via", default="os", show_default=True,
              help="os: through bin/chaos_os (blade runs blade-go per command); cplus: as "
              "blade's HTTP cplus agent (`blade prepare cplus --port P` starts blade-go server)")
def chaosblade_install(home, version_, via):
    from .chaosblade.install import install
    _respond(install, home, version_, via)


@chaosblade.command("uninstall", context_settings=CONTEXT, help="Restore bin/chaos_os and the "
                    "os spec file exactly as they were before install.")
@click.option("--home", required=True, help="The chaosblade release directory (holds blade)")
def chaosblade_uninstall(home):
    from .chaosblade.install import uninstall
    _respond(uninstall, home)


@cli.command(context_settings=CONTEXT, help="Serve chaosblade's external-executor HTTP protocol "
             "(GET /create?target=go&action=A&suid=UID&flag=value..., /destroy?suid=UID, "
             "/status[?suid=UID], /remove) until stopped; each answer is one JSON Response.")
@click.option("--port", required=True, type=int, help="TCP port")
@click.option("--ip", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless you mean otherwise)")
@click.option("--name", default=None, help="A label kept in the command line (blade finds its "
              "cplus agent by the name chaosblade-exec-cplus)")
@click.option("--debug", is_flag=True, help="Diagnostics to stderr and the log file")
def server(port, ip, name, debug):
    from .server import serve
    global _fast_exit
    _fast_exit = False  # its handler threads may still be sending the last answer (/remove)
    serve(ip, port)


# ---- entry point ------------------------------------------------------------------------

def _wants_debug(argv) -> bool:
    return any(a == "--debug" or (a.startswith("--debug=") and a[8:].lower() in _TRUE)
               for a in argv)


def _log_file():
    try:
        from .state import log_path
        return str(log_path())
    except (BladeError, OSError) as e:
        print(f"blade-go: no log file: {e}", file=sys.stderr)
        return None


def _stderr_to(path):
    """Under blade, fd 2 (ours and every child's) is the log file: blade parses stderr."""
    from .state import open_private  # no symlink followed in the state home
    try:
        f = open_private(path, "ab")
    except (BladeError, OSError):
        f = open(os.devnull, "ab")
    sys.stderr.flush()
    with f:
        os.dup2(f.fileno(), 2)


def _setup_logging(debug: bool, blade: bool) -> str | None:
    """Debug: details to stderr (standalone) and the log file. Warnings always go to the log."""
    for h in list(log.handlers):  # run() may be called more than once in one process (tests)
        log.removeHandler(h)
        h.close()
    path = _log_file() if (debug or blade) else None
    if blade and path:
        _stderr_to(path)
    # Under blade the log file is the only place the user can read what blade's own summary
    # drops (which experiments a destroy by matchers removed): info lines go there too.
    log.setLevel(logging.DEBUG if debug else logging.INFO if blade else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    handlers = [] if blade else [logging.StreamHandler(sys.stderr)] if debug else []
    if path:
        try:
            from .state import open_private  # no symlink followed; any bytes of argv logged
            handlers.append(logging.StreamHandler(
                open_private(path, "a", errors="backslashreplace")))
        except (BladeError, OSError) as e:
            print(f"blade-go: no log file: {e}", file=sys.stderr)
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.propagate = not handlers
    return path


def _usage_code(e: click.UsageError) -> int:
    if isinstance(e, click.exceptions.NoSuchOption):
        return Code.COMMAND_ILLEGAL
    if isinstance(e, click.exceptions.MissingParameter):
        return Code.PARAMETER_LESS
    if isinstance(e, click.exceptions.BadOptionUsage):  # e.g. "--func requires an argument"
        return Code.PARAMETER_LESS
    if isinstance(e, click.BadParameter):
        return Code.PARAMETER_ILLEGAL
    return Code.COMMAND_ILLEGAL


def _prepare_argv(argv) -> list:
    """blade's encodings undone: `@@##` -> space everywhere; `--debug=true|false` (every
    command accepts --debug, and blade replays it on destroy)."""
    return cb.normalize_bools(cb.decode_spaces(argv), {"debug"})


def run(argv) -> int:
    """Run one command; returns the exit status. Response (or help/spec text) goes to stdout."""
    blade = cb.under_blade()
    status = _run(list(argv), blade)
    return 0 if blade else status  # under blade, `success` is the signal (as chaos_os does)


def _run(argv, blade) -> int:
    debug = _wants_debug(argv)
    log_file = _setup_logging(debug, blade)
    log.debug("argv: %r (under blade: %s)", redact_argv(argv), blade)  # no --endpoint secrets
    try:
        argv = _prepare_argv(argv)
        code = cli.main(args=argv, prog_name="blade-go", standalone_mode=False)
        return code if isinstance(code, int) else 0  # help, spec
    except Respond as r:
        return emit(r.resp)
    except BladeError as e:
        log.debug("failed: %s", e, exc_info=True)
        if blade:
            log.warning("%s failed: %s", " ".join(argv[:3]), e.message)
        return emit(fail(e.code, e.message))
    except click.exceptions.NoArgsIsHelpError as e:  # bare `blade-go`
        click.echo(e.ctx.get_help())
        return 0
    except click.UsageError as e:
        return emit(fail(_usage_code(e), e.format_message()))
    except click.exceptions.Exit as e:
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        return emit(fail(Code.UNEXPECTED_STATUS, "interrupted"))
    except Exception as e:  # a bug: reported as JSON, details only with --debug
        detail = traceback.format_exc()
        log.debug("internal error:\n%s", detail)
        if blade:
            log.error("internal error:\n%s", detail)
        where = f"; details in {log_file}" if log_file else "; rerun with --debug for details"
        return emit(fail(Code.UNEXPECTED_STATUS,
                         f"internal error: {type(e).__name__}: {e}{where}"))


_fast_exit = True


def main(argv=None):
    status = run(sys.argv[1:] if argv is None else argv)
    if not _fast_exit:
        sys.exit(status)
    _exit(status)


def _exit(status: int):
    """The Response is out: end the process now. Tearing down every imported module costs a
    command 20-50 ms and does nothing it needs: output and logs are flushed here, every lock and
    file was released by its `with`, child processes were waited for or run on by design."""
    os._exit(flush(status))


def flush(status) -> int:
    """Output and logs out (before an os._exit); the exit status to use."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    logging.shutdown()
    return status if isinstance(status, int) else 1
