"""containerize: a real buildah build of an exported bento into an OCI image, without a Docker daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.containerize import buildah
from components.containerize.buildah import (
    DROP_APT_CACHES,
    LABEL_PREFIX,
    BuildahMissing,
    ContainerizeError,
    _global_flags,
    build_image,
    drop_apt_caches,
    image_labels,
    validate_image,
)

TINY_SERVICE = Path(__file__).parent / "support" / "tiny_bento"
needs_buildah = pytest.mark.skipif(
    not (shutil.which("buildah") and shutil.which("debootstrap") and os.geteuid() == 0),
    reason="needs buildah and debootstrap as root (.ci/run installs them)",
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


@pytest.mark.slow
@needs_buildah
def test_real_buildah_build_of_a_bento(storage_root, tiny_bento, monkeypatch):
    from components.containerize.debian_base import build_base_image

    base = build_base_image(storage_root)
    lines: list[str] = []
    image = f"localhost/kfp-torch-lifecycle/tiny:{tiny_bento['tag'].split(':')[1]}"
    built = build_image(tiny_bento["archive"], image, base, storage_root=storage_root, echo=lines.append)
    assert built.digest.startswith("sha256:") and not built.pushed
    assert built.reference == f"localhost/kfp-torch-lifecycle/tiny@{built.digest}"
    config = image_config(storage_root, image)
    assert config["Entrypoint"] == ["/home/bentoml/bento/env/docker/entrypoint.sh"]
    assert "3000/tcp" in config["ExposedPorts"]

    # Pushing with credentials: the registry is unreachable, and the secret must not leak anywhere.
    monkeypatch.setattr(buildah, "PUSH_RETRY_SECONDS", 0.1)  # the closed port is retried like a busy registry
    auth = Path(storage_root) / "auth.json"
    auth.write_text(json.dumps({"auths": {"127.0.0.1:9": {"auth": "dXNlcjpzM2NyZXQtdG9rZW4="}}}))
    output: list[str] = []
    with pytest.raises(ContainerizeError) as failed:
        build_image(
            tiny_bento["archive"],
            image.replace("localhost/", "127.0.0.1:9/"),
            base,
            push=True,
            registry_auth_file=str(auth),
            storage_root=storage_root,
            echo=output.append,
        )
    everything = str(failed.value) + "\n".join(output + lines)
    assert "dXNlcjpzM2NyZXQtdG9rZW4=" not in everything and "s3cret-token" not in everything


@pytest.mark.slow
@needs_buildah
def test_containerize_component_under_kfp_local(storage_root, tiny_bento, tmp_path):
    from kfp import dsl, local

    from components.containerize.component import containerize
    from components.containerize.debian_base import build_base_image

    base = build_base_image(storage_root)

    @dsl.pipeline(name="containerize-only")
    def only_containerize():
        bento = dsl.importer(artifact_uri=tiny_bento["dir"], artifact_class=dsl.Artifact, reimport=False)
        containerize(
            bento=bento.output,
            image_repository="localhost/kfp-torch-lifecycle/tiny-kfp",
            base_image=base,
            push=False,
            storage_root=storage_root,
        )

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)
    only_containerize()
    (output,) = tmp_path.glob("containerize-only-*/containerize/executor_output.json")
    reference = json.loads(output.read_text())["parameterValues"]["Output"]
    assert reference.startswith("localhost/kfp-torch-lifecycle/tiny-kfp@sha256:")


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
    """The real bento build_bento makes (built offline), on the debootstrap base (648 MB of it: Debian with
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
