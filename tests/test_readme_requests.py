"""Every request the README shows for `make serve`, run as written with the real curl against a served bento."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import test_serving

ROOT = Path(__file__).resolve().parents[1]
README_HOST = "http://127.0.0.1:3000"
DEMO_DATA = ".local/demo/digits-repo/data/raw"

digits_bento = test_serving.digits_bento  # the digits model, built into a bento and served on 127.0.0.1


def readme_requests() -> list[str]:
    """The curl commands of the code block under "`make serve` then serves ...", one per command."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("`make serve` then serves", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)[1]
    return [command.strip() for line in block.splitlines() for command in line.split("; ") if command.strip()]


def test_the_readme_shows_every_kind_of_request():
    commands = readme_requests()
    assert any("-F files=@" in c for c in commands) and any("-d @serving/examples/" in c for c in commands)
    assert all(c.startswith("curl ") and README_HOST in c for c in commands)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_every_readme_request_answers_as_the_readme_says(digits_bento, digits_dir):
    labels = dict(line.split(",")[:2] for line in (digits_dir / "labels.csv").read_text().splitlines()[1:])
    for command in readme_requests():
        argv = [arg.replace(README_HOST, digits_bento["url"]) for arg in shlex.split(command)]
        # The demo data where `make run` puts it, here where the test made it.
        argv = [arg.replace(DEMO_DATA, str(digits_dir)) for arg in argv]
        done = subprocess.run([*argv, "--silent", "--show-error", "--fail-with-body"], capture_output=True, cwd=ROOT)
        assert done.returncode == 0, f"{command}: {done.stderr.decode()} {done.stdout[:500].decode()}"
        if "/predict" not in command:
            continue
        [prediction] = json.loads(done.stdout)["predictions"]
        if "files=@" in command:
            expected = labels[command.split(f"files=@{DEMO_DATA}/", 1)[1].split()[0]]
        else:  # the JSON example: the demo's image 0007.png, a 7, on the 0..255 scale the model reads
            expected = re.search(r"digit-(\d)\.json", command)[1]
        assert prediction["class"] == expected, f"{command} answered {prediction}"


def test_the_json_example_is_the_demos_image_on_the_models_scale(digits_dir):
    import numpy as np
    from PIL import Image

    [example] = json.loads((ROOT / "serving" / "examples" / "digit-7.json").read_text())["images"]
    png = np.asarray(Image.open(digits_dir / "images" / "0007.png"))
    assert np.array_equal(np.array(example), png) and png.max() == 255  # 0..255, not scikit-learn's 0..16
