"""kfp-torch: compile, upload, run and schedule this library's pipelines on Kubeflow Pipelines; print a run's report.

Connection (any command that talks to KFP, through kfp.Client): --host or KFP_HOST (default
http://127.0.0.1:8080, a port-forwarded ml-pipeline-ui), --namespace or KFP_NAMESPACE (in a Kubeflow
notebook, its own), and a bearer token from --token-file, KFP_TOKEN_FILE, KFP_TOKEN, or the Kubeflow
ServiceAccount token (KF_PIPELINES_SA_TOKEN_PATH, default /var/run/secrets/kubeflow/pipelines/token when
it exists). Tokens are never accepted on the command line.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys

from kfp_server_api.exceptions import ApiException

from pipelines import kfp_commands
from pipelines.kfp_client import UNREACHABLE, Connection, KfpError, connect
from pipelines.run_parameters import ParameterError, load_compiled
from pipelines.schedules import ScheduleError

EXIT_FAILED = 1  # the API refused, could not be reached, or the run did not succeed
EXIT_BAD_INPUT = 2  # nothing was sent: bad parameters, cron, file (argparse uses 2 as well)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: the options work before or after the subcommand without one hiding the other.
    group = parser.add_argument_group("connection")
    group.add_argument("--host", default=argparse.SUPPRESS, help="KFP API URL (env KFP_HOST)")
    group.add_argument("--namespace", default=argparse.SUPPRESS, help="Kubeflow profile namespace (env KFP_NAMESPACE)")
    group.add_argument(
        "--token-file", default=argparse.SUPPRESS, help="file holding a bearer token (env KFP_TOKEN_FILE)"
    )


def _params_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter, typed by the pipeline's declared inputs (repeatable)",
    )
    parser.add_argument("--experiment", default=kfp_commands.DEFAULT_EXPERIMENT, help="experiment (created if missing)")
    parser.add_argument("--pipeline-root", help="where the run's artifacts go (default: the cluster's)")
    parser.add_argument("--service-account", help="Kubernetes ServiceAccount the run's pods use")


def _target_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="a compiled pipeline YAML")
    source.add_argument("--pipeline", help="an uploaded pipeline, by name")
    parser.add_argument("--version", help="with --pipeline: the version (name or ID); default the latest")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kfp-torch", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    _connection_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # No abbreviations: `--token X` must never pass for `--token-file X`.
    commands.add_parser = functools.partial(commands.add_parser, allow_abbrev=False)

    compile_ = commands.add_parser("compile", help="compile every pipeline, and every component, to YAML")
    compile_.add_argument("--output-dir", default="build/pipelines", help="the pipelines (default build/pipelines)")
    compile_.add_argument(
        "--components-dir",
        default="build/components",
        help="the component specs, for kfp.components.load_component_from_file (default build/components)",
    )
    compile_.add_argument("--settings", metavar="FILE", help="YAML of compile-time Kubernetes settings")

    commands.add_parser(
        "local", help="run the training pipeline on this machine with kfp.local (make run)", add_help=False
    )

    upload = commands.add_parser("upload", help="upload a compiled pipeline, or a new version of it")
    upload.add_argument("file", help="a compiled pipeline YAML")
    upload.add_argument("--name", help="pipeline name (default: the name compiled into the file)")
    upload.add_argument("--description")
    upload.add_argument("--shared", action="store_true", help="create the pipeline shared, not in --namespace")
    _connection_options(upload)

    run = commands.add_parser("run", help="start a run from a compiled file or an uploaded pipeline")
    _target_options(run)
    _params_options(run)
    run.add_argument("--run-name", help="display name (default: pipeline name and time)")
    run.add_argument(
        "--no-cache",
        action="store_true",
        help="run every task afresh (with --pipeline: the version's spec is sent with caching off)",
    )
    run.add_argument("--wait", action="store_true", help="follow the run to its end; exit 0 only on SUCCEEDED")
    run.add_argument("--poll-interval", type=float, default=5.0, help="seconds between checks with --wait")
    run.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    _connection_options(run)

    schedule = commands.add_parser("schedule", help="recurring runs")
    actions = schedule.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser = functools.partial(actions.add_parser, allow_abbrev=False)
    create = actions.add_parser("create", help="create a recurring run")
    _target_options(create)
    _params_options(create)
    create.add_argument("--name", required=True, help="recurring run display name")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help="5 fields (minute hour day month weekday) or 6 with seconds first")
    when.add_argument("--interval", help="30m, 6h, 1d, 1h30m or seconds")
    create.add_argument("--start-time", help="no runs before this RFC 3339 time (2025-06-01T03:00:00Z) or date")
    create.add_argument("--end-time", help="no runs after this RFC 3339 time or date")
    create.add_argument("--max-concurrency", type=int, default=1, help="runs at once, 1-10 (default 1)")
    create.add_argument("--catchup", action="store_true", help="run every missed interval (default: only the latest)")
    create.add_argument(
        "--always-latest",
        action="store_true",
        help="with --pipeline: each run uses the pipeline's latest version at that time (default: pin the version)",
    )
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    _connection_options(create)
    for action, text in (("enable", "enable"), ("disable", "disable"), ("delete", "delete")):
        sub = actions.add_parser(action, help=f"{text} a recurring run")
        sub.add_argument("id", help="recurring run ID")
        _connection_options(sub)
    listing = actions.add_parser("list", help="list recurring runs")
    listing.add_argument("--experiment", help="only this experiment's")
    _connection_options(listing)
    _add_runs_command(commands)
    _add_report_command(commands)
    return parser


def _add_report_command(commands) -> None:
    from pipelines.run_artifacts import MLMD_HOST_ENV

    report = commands.add_parser(
        "report",
        help="print a run's report: Markdown to post on a pull request, or the HTML page",
        description="Fetch the report of a finished run from the artifact store, where KFP recorded it in ML "
        "Metadata (asked at the host's origin, as the Kubeflow UI does).",
    )
    report.add_argument("id", help="run ID")
    report.add_argument("--format", choices=("markdown", "html"), default="markdown", help="default markdown")
    report.add_argument("--output", metavar="FILE", help="write it to FILE instead of printing it")
    report.add_argument(
        "--mlmd-host",
        help=f"ML Metadata's gRPC-Web address (env {MLMD_HOST_ENV}; default: the host's origin, where the "
        "Kubeflow Pipelines UI serves it)",
    )
    _connection_options(report)


def _add_runs_command(commands) -> None:
    runs = commands.add_parser("runs", help="list runs, show one, stop one")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser = functools.partial(actions.add_parser, allow_abbrev=False)
    listing = actions.add_parser("list", help="the newest runs, newest first")
    listing.add_argument("--experiment", help="only this experiment's")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    _connection_options(listing)
    for action, text in (("get", "show a run: state, parameters, error, tasks"), ("terminate", "stop a run")):
        sub = actions.add_parser(action, help=text)
        sub.add_argument("id", help="run ID")
        _connection_options(sub)


def _connection(args) -> Connection:
    """The connection the flags and environment describe, made once; no request is sent yet."""
    if getattr(args, "connection", None) is None:
        args.connection = connect(
            getattr(args, "host", None), getattr(args, "namespace", None), getattr(args, "token_file", None)
        )
    return args.connection


def _client(args):
    """The ``kfp.Client``: built on first use, after every local check."""
    return _connection(args).client


def _compile(args) -> int:
    from pipelines.compile import compile_all, compile_components

    if args.settings:
        if "settings_path" not in inspect.signature(compile_all).parameters:
            raise ParameterError("--settings needs pipelines.compile.compile_all(settings_path=...), not here yet")
        try:
            written = compile_all(args.output_dir, settings_path=args.settings)
        except ValueError as error:  # the settings file is unreadable or has bad values
            raise ParameterError(str(error)) from None
    else:
        written = compile_all(args.output_dir)
    for path in written + compile_components(args.components_dir):
        print(path)
    return 0


def _upload(args) -> int:
    load_compiled(args.file)  # a bad file is bad input, found before any request
    result = kfp_commands.upload(_client(args), args.file, args.name, args.description, args.shared)
    pipeline, version = result.pipeline, result.version
    if result.created_pipeline:
        print(f"created pipeline {pipeline.name} ({pipeline.pipeline_id})")
    if result.uploaded:
        print(f"uploaded version {version.name} ({version.pipeline_version_id})")
    else:
        print(f"version {version.name} ({version.pipeline_version_id}) exists already; nothing uploaded")
    return 0


def _target(args, client_factory):
    if args.file:
        if args.version:
            raise ParameterError("--version goes with --pipeline NAME, not with a file")
        return kfp_commands.target_from_file(args.file), None
    client = client_factory()
    return kfp_commands.target_from_server(client, args.pipeline, args.version), client


def _run(args) -> int:
    target, client = _target(args, lambda: _client(args))
    parameters = kfp_commands.typed_parameters(target.compiled, args.param)
    client = client or _client(args)
    run = kfp_commands.start_run(
        client,
        target,
        parameters,
        args.experiment,
        args.run_name,
        args.pipeline_root,
        args.service_account,
        cache=not args.no_cache,
    )
    run_id = run.run_id
    print(f"run {run_id} started: {target.label}" + (", caching off" if args.no_cache else ""))
    if not args.wait:
        return 0
    final = kfp_commands.wait_for_run(
        client,
        run_id,
        poll_interval=args.poll_interval,
        timeout=args.timeout,
        on_change=lambda state, _run: print(f"run {run_id}: {state}", flush=True),
    )
    return _ended(final)


def _ended(run) -> int:
    """0 for a run that succeeded; otherwise its error on stderr and 1."""
    if run.state == "SUCCEEDED":
        return 0
    print(f"kfp-torch: run {run.run_id} ended {run.state}: {kfp_commands.run_error(run)}", file=sys.stderr)
    return EXIT_FAILED


def _runs(args) -> int:
    client = _client(args)
    if args.action == "list":
        found = kfp_commands.list_runs(client, args.experiment, args.limit)
        for run in found:
            print(kfp_commands.describe_run(run))
        if not found:
            print("no runs")
        return 0
    if args.action == "get":
        print(kfp_commands.run_report(client.get_run(args.id)))
        return 0
    run = kfp_commands.terminate_run(client, args.id)
    if run.state in kfp_commands.FINAL_STATES and run.state != "CANCELED":
        print(f"run {args.id} had ended {run.state} already; nothing to terminate")
    else:
        print(f"run {args.id}: {run.state} (terminate requested)")
    return 0


def _report(args) -> int:
    import os

    from pipelines.metadata_store import MetadataStoreError, for_client
    from pipelines.run_artifacts import MLMD_HOST_ENV, RunArtifactsError
    from pipelines.run_report import read_report

    client = _client(args)
    run = client.get_run(args.id)  # an unknown run is the API's 404, explained
    try:
        store = for_client(client, args.mlmd_host or os.environ.get(MLMD_HOST_ENV) or None)
        text = read_report(store, run.run_id, args.format)
    except (MetadataStoreError, RunArtifactsError) as error:
        state = "" if run.state == "SUCCEEDED" else f" (the run is {run.state}: the report is its last step)"
        raise KfpError(f"{error}{state}") from None
    if args.output:
        _write_atomic(args.output, text)
        print(f"wrote the {args.format} report of run {run.run_id} to {args.output}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _write_atomic(path: str, text: str) -> None:
    """``text`` into ``path``: a reader sees the old file or the whole new one, never a part."""
    import os
    import tempfile
    from pathlib import Path

    target = Path(path)
    try:
        fd, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(staging, target)
    except OSError as error:
        if "staging" in locals() and os.path.exists(staging):
            os.unlink(staging)
        raise KfpError(f"cannot write --output {path}: {error.strerror or error}") from None


def _schedule(args) -> int:
    if args.action == "create":
        # Everything local is checked before the first request.
        schedule = kfp_commands.Schedule(
            args.cron, args.interval, args.start_time, args.end_time, args.max_concurrency, args.catchup
        )
        if args.always_latest and args.file:
            raise ParameterError("--always-latest needs --pipeline NAME: a file has no versions")
        if args.always_latest and args.version:
            raise ParameterError("--always-latest and --version contradict each other: pick one")
        target, client = _target(args, lambda: _client(args))
        parameters = kfp_commands.typed_parameters(target.compiled, args.param)
        client = client or _client(args)
        created = kfp_commands.create_schedule(
            client,
            target,
            parameters,
            args.name,
            schedule,
            always_latest=args.always_latest,
            experiment=args.experiment,
            enabled=not args.disabled,
            pipeline_root=args.pipeline_root,
            service_account=args.service_account,
        )
        print(f"created recurring run {kfp_commands.describe_schedule(created)}")
        return 0
    client = _client(args)
    if args.action == "list":
        recurring = kfp_commands.list_schedules(client, args.experiment)
        for item in recurring:
            print(kfp_commands.describe_schedule(item))
        if not recurring:
            print("no recurring runs")
        return 0
    getattr(client, f"{args.action}_recurring_run")(args.id)
    print(f"recurring run {args.id}: {args.action}d")
    return 0


def _local(argv: list[str]) -> int:
    """``make run``: pipelines.local, with bad flags, data and a missing buildah as one-line errors naming the flag."""
    from components.containerize.buildah import BuildahMissing, find_buildah
    from pipelines import local

    try:
        if "--image" in argv:
            find_buildah()  # before the minutes the demo data and the run take
        return local.main(argv)
    except BuildahMissing as error:
        return _bad_input(f"--image needs buildah: {error}")
    except local.LocalInputError as error:  # every flag and the data directory, checked before anything runs
        return _bad_input(str(error))


def _bad_input(message: str) -> int:
    print(f"kfp-torch: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


COMMANDS = {
    "compile": _compile,
    "upload": _upload,
    "run": _run,
    "runs": _runs,
    "schedule": _schedule,
    "report": _report,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg.split("=")[0].startswith("--tok") and arg.split("=")[0] != "--token-file" for arg in argv):
        # Refused before argparse, which would echo the value back in its error.
        print(
            "kfp-torch: error: tokens are not accepted on the command line (they end up in shell history and "
            "process lists); use --token-file, KFP_TOKEN_FILE or KFP_TOKEN",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if argv[:1] == ["local"]:
        return _local(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ParameterError, ScheduleError) as error:
        return _bad_input(str(error))
    except KfpError as error:
        return _failed(error, error)
    except (ApiException, *UNREACHABLE) as error:  # from kfp.Client, so the connection was made
        return _failed(args.connection.explain(error), error)


def _failed(explained: KfpError, error: Exception) -> int:
    """The explained error on one line, with what was done about it (the notes on the original)."""
    notes = "".join(f"; {note}" for note in getattr(error, "__notes__", []))
    print(f"kfp-torch: error: {explained}{notes}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
