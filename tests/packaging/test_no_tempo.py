"""Grafana's Tempo (its Go module is AGPL-3.0) is not used: no file of the project fetches, builds or runs it.
Searched: every file git tracks (build scripts, Dockerfiles and image scripts, Go module requirements and builder
manifests, configurations, tests, charts and their values), apart from prose (Markdown) and this file. Tempo stays
only as the chart's opt-in subchart for users who run it themselves, off by default and enabled by no values file
that installs anything."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lynx"

# Spelled in two parts, so that this guard does not itself name the forbidden module.
TEMPO_MODULE = "github.com/grafana/" + "tempo"
# What fetching, building or running Tempo looks like in this repository's files.
FORBIDDEN = {
    "the Go module": re.compile(re.escape(TEMPO_MODULE)),
    "Tempo's container image": re.compile(r"\bgrafana/tempo[:@\"'\s]|lynx\.local/tempo\b"),
    "a Tempo build": re.compile(r"\bbuild_tempo\b|\bTEMPO_(VERSION|RELEASE|COMMIT)\b|upstream_image\s+tempo\b"
                                r"|build_tools\.sh\b[^\n]*\btempo\b"),
    "a Tempo binary run": re.compile(r"\b(find_binary|required_binary|start_tempo)\(\s*[\"']?tempo\b"
                                     r"|\bstart_tempo\(|[\"']tempo\.yaml[\"']|-config\.file=\S*tempo"),
}
# Values files that install the chart somewhere (the test beds, skaffold's); ci/tempo-values.yaml is rendered only.
INSTALLED_VALUES = [REPO / "tests" / "cluster" / "node-values.yaml", REPO / "tests" / "cluster" / "kwok-values.yaml"]


def searched_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    paths = [REPO / name for name in listed.stdout.split("\0") if name]
    return [p for p in paths if p.is_file() and p.suffix != ".md" and p != Path(__file__).resolve()]


def findings(files: list[Path]) -> list[str]:
    found = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary files hold no build instructions
        for what, pattern in FORBIDDEN.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
                found.append(f"{shown}:{line}: {what} ({match.group(0).strip()})")
    return found


def test_the_search_finds_each_kind_of_tempo_use(tmp_path):
    """The patterns catch what the project did before Jaeger replaced Tempo."""
    samples = {
        "go.mod": f"require {TEMPO_MODULE} v1.5.1-0.20240101000000-87c2dc380cec\n",
        "build.sh": 'build_tempo() { go build ./cmd/tempo; }\nbash scripts/build_tools.sh prometheus tempo otelcol\n',
        "images.sh": 'upstream_image tempo "$TEMPO_VERSION" 10001:10001 /var/tempo "$cache/tempo"\n',
        "conftest.py": 'binary = required_binary("tempo", "scripts/build_tools.sh tempo")\n'
                       'start_tempo(binary, load_config("tempo.yaml"), work)\n',
        "values.yaml": "image: grafana/tempo:2.6.0\n",
        "clean.py": "TraceStoreClient(url, kind='tempo')  # reading a Tempo someone else runs is allowed\n",
    }
    for name, text in samples.items():
        (tmp_path / name).write_text(text)
    found = findings(sorted(tmp_path.iterdir()))
    assert {Path(f.split(":")[0]).name for f in found} == set(samples) - {"clean.py"}, found


def test_no_file_fetches_builds_or_runs_tempo():
    found = findings(searched_files())
    assert not found, "\n".join(found)


def test_no_tempo_config_or_go_requirement_remains():
    assert not (REPO / "config" / "tempo.yaml").exists()
    for manifest in [*REPO.rglob("go.mod"), *REPO.rglob("*builder*.yaml")]:
        if ".venv" not in manifest.parts:
            assert "grafana/tempo" not in manifest.read_text(), manifest


def test_the_tempo_subchart_is_opt_in_and_off_wherever_the_chart_is_installed():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (tempo,) = [d for d in chart["dependencies"] if d["name"] == "tempo"]
    assert tempo["condition"] == "tempo.enabled"
    assert yaml.safe_load((CHART / "values.yaml").read_text())["tempo"]["enabled"] is False
    for values in INSTALLED_VALUES:
        assert (yaml.safe_load(values.read_text()).get("tempo") or {}).get("enabled") is not True, values
    skaffold = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    set_values = {k: v for r in skaffold["manifests"]["helm"]["releases"] for k, v in r.get("setValues", {}).items()}
    assert str(set_values.get("tempo.enabled", "false")).lower() == "false"
