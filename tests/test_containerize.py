"""containerize: a real buildah build of an exported bento into an OCI image, without a Docker daemon."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from components.containerize import buildah
from components.containerize.buildah import (
    DOCKERFILE,
    DROP_APT_CACHES,
    LABEL_PREFIX,
    BuildahMissing,
    ContainerizeError,
    _global_flags,
    build_image,
    drop_apt_caches,
    image_labels,
    push_image,
    validate_image,
)

TINY_SERVICE = Path(__file__).parent / "support" / "tiny_bento"
needs_buildah = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("mmdebstrap") and os.geteuid() == 0),
    reason="needs buildah and mmdebstrap as root (.ci/run installs them)",
)


@pytest.mark.parametrize(
    "image", ["Registry.example.com/UPPER/name:tag", "name:tag with space", "", "repo/name:" + "x" * 200]
)
def test_bad_image_references_are_named(image):
    with pytest.raises(ValueError, match="is not an image reference"):
        validate_image(image)


def test_without_buildah_it_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildahMissing, match=r"buildah is not installed.*apt-get install buildah"):
        build_image(tmp_path / "x.bento", "localhost/a/b:1", "localhost/base:1")


def test_missing_registry_credentials_file_fails_before_building(tmp_path):
    with pytest.raises(ContainerizeError, match=r"credentials file .*nope.json does not exist"):
        build_image(
            tmp_path / "x.bento",
            "localhost/a/b:1",
            "localhost/base:1",
            push=True,
            registry_auth_file=str(tmp_path / "nope.json"),
        )


@pytest.fixture(scope="module")
def storage_root():
    """buildah storage kept between runs (the base image takes minutes to make), outside git's view."""
    root = Path(
        os.environ.get("KFP_TORCH_LIFECYCLE_BUILDAH_ROOT", Path(__file__).resolve().parents[1] / ".local/buildah")
    )
    root.mkdir(parents=True, exist_ok=True)
    yield str(root)
    # Keep the base image (minutes to make), drop what the tests built (vfs stores whole layers).
    flags = ["buildah", *_global_flags(str(root))]
    listed = subprocess.run([*flags, "images", "--format", "{{.Name}}:{{.Tag}}"], capture_output=True, text=True)
    built = [name for name in listed.stdout.split() if "/tiny" in name]
    if built:
        subprocess.run([*flags, "rmi", "--force", *built], capture_output=True)


@pytest.fixture(scope="module")
def tiny_bento(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-bento")
    script = (
        "import bentoml, sys, json\n"
        "b = bentoml.bentos.build('service:Tiny', name='tiny', build_ctx=sys.argv[1], include=['service.py'])\n"
        "archive = bentoml.export_bento(b.tag, sys.argv[2] + '/tiny.bento')\n"
        "open(sys.argv[2] + '/bento.json', 'w').write(json.dumps({'bento_tag': str(b.tag), 'archive': 'tiny.bento'}))\n"
        "print(json.dumps({'tag': str(b.tag), 'archive': archive, 'dir': sys.argv[2]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(TINY_SERVICE), str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def image_config(storage_root, image: str) -> dict:
    """The OCI config (entrypoint, ports, env, labels) of a locally built image."""
    inspected = subprocess.run(
        ["buildah", *_global_flags(storage_root), "inspect", "--type", "image", image],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(inspected.stdout)["OCIv1"]["config"]


def buildah_output(storage_root: str, *arguments: str) -> str:
    done = subprocess.run(["buildah", *_global_flags(storage_root), *arguments], check=True, capture_output=True)
    return done.stdout.decode()


@pytest.mark.slow
@needs_buildah
def test_a_real_buildah_build_of_a_bento_by_the_component_under_kfp_local(
    storage_root, tiny_bento, tmp_path, monkeypatch, capfd
):
    """The one real build of the tiny bento: by the containerize component, under kfp.local, on the mmdebstrap
    base. Then a push of that image with credentials, to a registry that is not there: nothing leaks."""
    from kfp import dsl, local

    from components.containerize.component import containerize
    from components.containerize.debian_base import build_base_image

    base = build_base_image(storage_root)
    repository = "localhost/kfp-torch-lifecycle/tiny-kfp"

    @dsl.pipeline(name="containerize-only")
    def only_containerize():
        bento = dsl.importer(artifact_uri=tiny_bento["dir"], artifact_class=dsl.Artifact, reimport=False)
        containerize(
            bento=bento.output,
            image_repository=repository,
            base_image=base,
            push=False,
            storage_root=storage_root,
        )

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)
    only_containerize()
    (output,) = tmp_path.glob("containerize-only-*/containerize/executor_output.json")
    reference = json.loads(output.read_text())["parameterValues"]["Output"]
    image = f"{repository}:{tiny_bento['tag'].split(':')[1]}"
    digest = buildah_output(storage_root, "images", "--no-trunc", "--digests", "--format", "{{.Digest}}", image)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest.strip())
    assert reference == f"{repository}@{digest.strip()}"
    config = image_config(storage_root, image)
    assert config["Entrypoint"] == ["/home/bentoml/bento/env/docker/entrypoint.sh"]
    assert "3000/tcp" in config["ExposedPorts"]

    # Pushing with credentials: the registry is unreachable, and the secret must not leak anywhere.
    monkeypatch.setattr(buildah, "PUSH_RETRY_SECONDS", 0.1)  # the closed port is retried like a busy registry
    auth = Path(storage_root) / "auth.json"
    auth.write_text(json.dumps({"auths": {"127.0.0.1:9": {"auth": "dXNlcjpzM2NyZXQtdG9rZW4="}}}))
    unreachable = image.replace("localhost/", "127.0.0.1:9/")
    buildah_output(storage_root, "tag", image, unreachable)
    output_lines: list[str] = []
    with pytest.raises(ContainerizeError) as failed:
        push_image(unreachable, registry_auth_file=str(auth), storage_root=storage_root, echo=output_lines.append)
    everything = str(failed.value) + "\n".join(output_lines) + "".join(capfd.readouterr())
    assert "failed on the way (attempt 1 of 3)" in everything
    assert "dXNlcjpzM2NyZXQtdG9rZW4=" not in everything and "s3cret-token" not in everything


def test_a_build_asked_to_push_pushes_what_it_built_with_the_credentials(tmp_path, monkeypatch):
    """build_image's push: the image it built, with the credentials file given, and the pushed digest back."""
    archive = tmp_path / "tiny.bento"
    context = tmp_path / "context"
    (context / "env" / "docker").mkdir(parents=True)
    (context / DOCKERFILE).write_text("FROM base\n")
    with tarfile.open(archive, "w") as tar:
        tar.add(context, arcname=".")
    auth = tmp_path / "auth.json"
    auth.write_text("{}")
    ran: list[list[str]] = []

    def run(command, echo, what):
        ran.append(command)
        if "inspect" in command:
            return json.dumps({"Manifest": json.dumps({"layers": [{"size": 10}], "config": {"size": 2}})})
        if "push" in command:
            Path(command[command.index("--digestfile") + 1]).write_text("sha256:" + "b" * 64)
        return "sha256:" + "a" * 64

    monkeypatch.setattr(buildah, "_run", run)
    monkeypatch.setattr(buildah, "find_buildah", lambda: "buildah")
    built = build_image(
        archive, "registry.example.com/team/tiny:1", "localhost/base:1", push=True, registry_auth_file=str(auth)
    )
    (push,) = [command for command in ran if "push" in command]
    assert push[push.index("--authfile") + 1] == str(auth)
    assert push[-2:] == ["registry.example.com/team/tiny:1", "docker://registry.example.com/team/tiny:1"]
    assert ran.index(push) > next(i for i, command in enumerate(ran) if "build" in command)
    assert (built.pushed, built.digest) == (True, "sha256:" + "b" * 64)
    assert built.reference == "registry.example.com/team/tiny@sha256:" + "b" * 64


def test_apt_caches_are_dropped_as_root_before_the_user_switch(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM base\nRUN apt-get update\nUSER bentoml\nENTRYPOINT ["x"]\n')
    drop_apt_caches(dockerfile)
    assert dockerfile.read_text().splitlines() == [
        "FROM base",
        "RUN apt-get update",
        DROP_APT_CACHES,
        "USER bentoml",
        'ENTRYPOINT ["x"]',
    ]
    dockerfile.write_text("FROM base\n")
    drop_apt_caches(dockerfile)
    assert dockerfile.read_text().splitlines() == ["FROM base", DROP_APT_CACHES]


def test_image_labels_carry_the_bentos_lineage(tmp_path):
    (tmp_path / "bento.yaml").write_text(
        "name: image-classifier\nversion: v1\nlabels:\n  dataset_commit: 0123abcd\n  accuracy: '0.97'\n"
        "models:\n- tag: image-classifier:m1\n  module: ''\n"
    )
    assert image_labels(tmp_path) == {
        "org.opencontainers.image.title": "image-classifier",
        "org.opencontainers.image.version": "v1",
        LABEL_PREFIX + "bento": "image-classifier:v1",
        LABEL_PREFIX + "model": "image-classifier:m1",
        LABEL_PREFIX + "dataset_commit": "0123abcd",
        LABEL_PREFIX + "accuracy": "0.97",
    }


CPU_IMAGE_LIMIT = 1_000_000_000  # bytes; the CUDA build of torch alone is several GB


@pytest.mark.slow
@needs_buildah
def test_the_cpu_classifier_bentos_image_is_under_1_gb_and_carries_its_lineage(storage_root, tmp_path):
    """The real bento build_bento makes (built offline), on the mmdebstrap base (598 MB of it: Debian with
    build-essential, which BentoML's Dockerfile installs anyway); its packages come from the package index."""
    from components.containerize.debian_base import build_base_image
    from tests.support.offline_bento import build_offline, make_model, network_can_be_closed

    if not network_can_be_closed():
        pytest.skip("needs unshare -rn to build the bento with the network closed")
    base = build_base_image(storage_root)
    descriptor, _ = build_offline(make_model(tmp_path / "model"), tmp_path / "bento", tmp_path)
    image = f"localhost/kfp-torch-lifecycle/tiny-classifier:{descriptor['bento_tag'].split(':')[1]}"
    lines: list[str] = []
    built = build_image(
        tmp_path / "bento" / descriptor["archive"], image, base, storage_root=storage_root, echo=lines.append
    )
    assert f"image {image}: {built.size_bytes / 1e6:.1f} MB ({built.size_bytes} bytes)" in lines
    assert 0 < built.size_bytes < CPU_IMAGE_LIMIT, f"the CPU image is {built.size_bytes / 1e6:.0f} MB"

    config = image_config(storage_root, image)
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["KFP_TORCH_LIFECYCLE_MODEL_TAG"] == descriptor["model_tag"]
    assert env["KFP_TORCH_LIFECYCLE_DATASET_COMMIT"] == "0123abcd"
    assert env["KFP_TORCH_LIFECYCLE_METRIC_ACCURACY"] == "0.97"
    assert config["Labels"][LABEL_PREFIX + "model"] == descriptor["model_tag"]
    assert config["Labels"][LABEL_PREFIX + "dataset_commit"] == "0123abcd"
    assert config["Labels"][LABEL_PREFIX + "accuracy"] == "0.97"
    assert config["Labels"]["org.opencontainers.image.version"] == descriptor["bento_tag"].split(":")[1]


@pytest.mark.parametrize(
    "failures, attempts",
    [
        (["dial tcp 10.0.0.5:443: connect: connection refused", "received unexpected HTTP status: 503"], 3),
        (["unauthorized: authentication required"], 1),
        (["name unknown: repository team/model not found"], 1),
    ],
)
def test_a_push_is_retried_only_when_the_way_failed(monkeypatch, failures, attempts):
    from components.containerize import buildah

    calls = []

    def run(command, echo, what):
        calls.append(command)
        if len(calls) <= len(failures):
            raise ContainerizeError(f"{what} failed (exit 1); last output:\n{failures[len(calls) - 1]}")
        return "pushed"

    monkeypatch.setattr(buildah, "_run", run)
    echoed: list[str] = []
    if attempts == 1:
        with pytest.raises(ContainerizeError, match=failures[0]):
            buildah._push(["buildah", "push"], "registry.example.com/team/model:1", echoed.append, sleep=lambda s: None)
    else:
        buildah._push(["buildah", "push"], "registry.example.com/team/model:1", echoed.append, sleep=lambda s: None)
        assert echoed == [
            "buildah push of registry.example.com/team/model:1 failed on the way (attempt 1 of 3); retry in 10 s",
            "buildah push of registry.example.com/team/model:1 failed on the way (attempt 2 of 3); retry in 20 s",
        ]
    assert len(calls) == attempts
