"""kfp-torch: compile, upload, run and schedule this library's pipelines on Kubeflow Pipelines.

Connection (any command that talks to KFP): --host or KFP_HOST (default http://127.0.0.1:8080, a
port-forwarded ml-pipeline-ui), --namespace or KFP_NAMESPACE, and a bearer token from --token-file,
KFP_TOKEN_FILE, KFP_TOKEN, or the Kubeflow ServiceAccount token (KF_PIPELINES_SA_TOKEN_PATH, default
/var/run/secrets/kubeflow/pipelines/token when it exists). Tokens are never accepted on the command line.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import sys

from pipelines import kfp_commands
from pipelines.kfp_client import KfpClient, KfpError, connect
from pipelines.run_parameters import ParameterError
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

    compile_ = commands.add_parser("compile", help="compile every pipeline to YAML in one folder")
    compile_.add_argument("--output-dir", default="build/pipelines")
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
    return parser


def _client(args) -> KfpClient:
    return KfpClient(
        connect(getattr(args, "host", None), getattr(args, "namespace", None), getattr(args, "token_file", None))
    )


def _compile(args) -> int:
    from pipelines.compile import compile_all

    if args.settings:
        if "settings_path" not in inspect.signature(compile_all).parameters:
            raise ParameterError("--settings needs pipelines.compile.compile_all(settings_path=...), not here yet")
        try:
            written = compile_all(args.output_dir, settings_path=args.settings)
        except ValueError as error:  # the settings file is unreadable or has bad values
            raise ParameterError(str(error)) from None
    else:
        written = compile_all(args.output_dir)
    for path in written:
        print(path)
    return 0


def _upload(args) -> int:
    result = kfp_commands.upload(_client(args), args.file, args.name, args.description, args.shared)
    pipeline, version = result.pipeline, result.version
    if result.created_pipeline:
        print(f"created pipeline {pipeline.get('name')} ({pipeline['pipeline_id']})")
    if result.uploaded:
        print(f"uploaded version {version.get('name')} ({version.get('pipeline_version_id')})")
    else:
        print(f"version {version.get('name')} ({version.get('pipeline_version_id')}) exists already; nothing uploaded")
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
        client, target, parameters, args.experiment, args.run_name, args.pipeline_root, args.service_account
    )
    run_id = run["run_id"]
    print(f"run {run_id} started: {target.label}")
    print(f"details: {client.connection.host}/#/runs/details/{run_id}")
    if not args.wait:
        return 0
    final = kfp_commands.wait_for_run(
        client,
        run_id,
        poll_interval=args.poll_interval,
        timeout=args.timeout,
        on_change=lambda state, _run: print(f"run {run_id}: {state}", flush=True),
    )
    if final.get("state") == "SUCCEEDED":
        return 0
    print(f"kfp-torch: run {run_id} ended {final.get('state')}: {kfp_commands.run_error(final)}", file=sys.stderr)
    return EXIT_FAILED


def _schedule(args) -> int:
    if args.action == "create":
        # Everything local is checked before the first request.
        from pipelines import schedules

        schedules.trigger(cron=args.cron, interval=args.interval)
        schedules.check_max_concurrency(args.max_concurrency)
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
            cron=args.cron,
            interval=args.interval,
            max_concurrency=args.max_concurrency,
            catchup=args.catchup,
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
        experiment_id = client.experiment(args.experiment)["experiment_id"] if args.experiment else None
        recurring = client.list_recurring_runs(experiment_id)
        for item in recurring:
            print(kfp_commands.describe_schedule(item))
        if not recurring:
            print("no recurring runs")
        return 0
    getattr(client, f"{args.action}_recurring_run")(args.id)
    print(f"recurring run {args.id}: {args.action}d")
    return 0


COMMANDS = {"compile": _compile, "upload": _upload, "run": _run, "schedule": _schedule}


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
        from pipelines import local

        return local.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ParameterError, ScheduleError) as error:
        print(f"kfp-torch: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KfpError as error:
        print(f"kfp-torch: error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
