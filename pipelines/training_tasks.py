"""The tasks both training pipelines add (argument check, data pull, baseline, evaluation and its gate, report),
each with its step's Kubernetes settings applied."""

from dataclasses import fields

from kfp import dsl

from components.build_bento.component import build_bento
from components.check_arguments.component import check_arguments
from components.containerize.component import containerize
from components.distributed_train.component import distributed_train
from components.dvc_pull.component import dvc_pull
from components.evaluate.component import evaluate
from components.evaluate.gate import DECISION_OUTPUT
from components.find_baseline.component import find_baseline
from components.register.component import register
from components.report.component import report
from components.resolve_revision.component import resolve_revision
from components.train.config import TrainConfig
from pipelines.deploy_tasks import deploy_then
from pipelines.kubernetes_settings import ClusterSettings, configure_step

TRAINING_ARGUMENTS = tuple(item.name for item in fields(TrainConfig))
REPORT_TASK = "report"  # the report tasks' name, suffixed by KFP's compiler: report, report-2, ...


def training_arguments(values: dict) -> dict:
    """The pipeline's training parameters (every ``TrainConfig`` field), to pass on to a training step."""
    missing = [name for name in TRAINING_ARGUMENTS if name not in values]
    if missing:
        raise TypeError(f"the pipeline lacks the training parameter(s) {', '.join(missing)} (TrainConfig's fields)")
    return {name: values[name] for name in TRAINING_ARGUMENTS}


def job_arguments(values: dict) -> dict:
    """The distributed pipeline's parameters that ``distributed_train`` takes under the same name, apart from the
    training parameters: the launcher, the job's pods, its timeouts and queue, your own image and command."""
    inputs = distributed_train.component_spec.inputs
    return {name: value for name, value in values.items() if name in inputs and name not in TRAINING_ARGUMENTS}


def packaging_arguments(values: dict) -> dict:
    """The pipeline's serving-image parameters, as ``evaluate_and_gate`` takes them (``packaging``)."""
    return {
        "image_repository": values["image_repository"],
        "base_image": values["serving_base_image"],
        "build_image": values["build_image"],
        "push_image": values["push_image"],
    }


def deployment_arguments(values: dict) -> dict:
    """The pipeline's deploy parameters, as ``evaluate_and_gate`` takes them (``deployment``)."""
    return {"target": values["deploy_target"], "namespace": values["deploy_namespace"]}


def check_first(values: dict, settings: ClusterSettings, distributed: bool = False) -> dsl.PipelineTask:
    """The first step: every argument a later step would fail on, checked in seconds; and the train
    step's placement (``node_selector``, ``tolerations`` outputs) fitted to ``gpus``."""
    arguments = {name: values[name] for name in check_arguments.component_spec.inputs if name in values}
    checked = check_arguments(**arguments, distributed=distributed).set_display_name("check arguments")
    return configure_step(checked, "check-arguments", settings)


def pull_data(repo_url, rev, data_path, dvc_remote, dvc_remote_config, dvc_jobs, settings: ClusterSettings, after):
    """resolve the revision (uncached) → dvc pull at that commit, so caching keys on the data's commit."""
    resolved = resolve_revision(repo_url=repo_url, rev=rev).set_display_name("resolve data revision").after(after)
    configure_step(resolved, "resolve-revision", settings)
    pulled = dvc_pull(
        repo_url=repo_url,
        rev=resolved.output,
        paths=[data_path],
        remote=dvc_remote,
        remote_config=dvc_remote_config,
        jobs=dvc_jobs,
        cache_dir=settings.dvc_cache_dir,
    ).set_display_name("dvc pull")
    return configure_step(pulled, "dvc-pull", settings)


def find_baseline_first(baseline, settings: ClusterSettings, after) -> dsl.PipelineTask:
    """The model evaluate compares with: what the registry says serves in production, none, or a model by URI.

    Uncached (see ``UNCACHED_STEPS``): production changes between runs."""
    found = find_baseline(baseline=baseline).set_display_name("find baseline").after(after)
    return configure_step(found, "find-baseline", settings)


def evaluate_and_gate(
    model, dataset, baseline_model, accuracy_threshold, packaging, settings: ClusterSettings, deployment: dict
) -> dsl.PipelineTask:
    """evaluate on the test split against the baseline; only if it says promote: register the model, build the
    bento and (when ``packaging["build_image"]`` and an image repository is given) its container image, and deploy
    it where ``deployment["target"]`` and ``deployment["namespace"]`` say (``pipelines.deploy_tasks``). The
    report comes last on every path, with what that path made (see :func:`write_report`)."""
    evaluated = evaluate(
        model=model, dataset=dataset, accuracy_threshold=accuracy_threshold, baseline_model=baseline_model
    ).set_display_name("evaluate")
    configure_step(evaluated, "evaluate", settings)
    promote = evaluated.outputs[DECISION_OUTPUT]  # evaluate's promotion decision
    evaluation = {"comparison": evaluated.outputs["comparison"], "worst_images": evaluated.outputs["worst_images"]}
    with dsl.If(promote == True, name="promotion-gate"):  # noqa: E712 (KFP condition)
        registered = register(
            model=model,
            evaluation=evaluated.outputs["metrics"],
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        configure_step(registered.set_display_name("register"), "register", settings)
        bento = build_bento(model=model, evaluation=evaluated.outputs["metrics"], base_image=packaging["base_image"])
        configure_step(bento.set_display_name("build bento"), "build-bento", settings)
        made = {**evaluation, "bento": bento.outputs["bento"], "registration": registered.outputs["registered"]}
        promoted = {"bento": bento.outputs["bento"], "model": model, "dataset": dataset, "evaluated": evaluated}
        promoted["registered"] = registered.outputs["registered"]

        def report_made(extra: dict) -> None:
            write_report({**made, **extra}, settings)

        # One branch runs: a task outside a condition cannot take the image built (or the deployment made) inside
        # it, so each way through the packaging and the deployment has its own report.
        with dsl.If(packaging["build_image"] == False, name="image-build-off"):  # noqa: E712 (KFP condition)
            deploy_then(report_made, deployment, promoted, settings, branch="-without-image")
        with dsl.Elif(packaging["image_repository"] == "", name="no-image-repository"):
            deploy_then(report_made, deployment, promoted, settings, branch="-no-repository")
        with dsl.Else(name="image-build"):
            image = containerize(
                bento=bento.outputs["bento"],
                image_repository=packaging["image_repository"],
                base_image=packaging["base_image"],
                push=packaging["push_image"],
                registry_auth_file=settings.registry_auth_file,
            )
            configure_step(image.set_display_name("containerize"), "containerize", settings)
            deploy_then(report_made, deployment, promoted, settings, image=image.output, branch="-with-image")
    with dsl.Else(name="held-back"):
        write_report(evaluation, settings)
    return evaluated


def write_report(inputs: dict, settings: ClusterSettings) -> dsl.PipelineTask:
    """The run report (HTML and Markdown for the Kubeflow UI) from evaluate's ``comparison`` and ``worst_images``
    and whatever this way through the pipeline made: ``bento``, ``registration``, ``image``, ``deployment``.

    Every way through the pipeline ends in one of these; their task names are ``report``, ``report-2``, ...
    (:data:`REPORT_TASK`), which ``pipelines.run_report`` looks for."""
    task = report(**inputs).set_display_name(REPORT_TASK)
    return configure_step(task, "report", settings)
