"""Every repository path the README names exists: files move, and the README must follow them."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def top_level_entries() -> set[str]:
    """The first component of every tracked path: a name the README can only mean as a path of this repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return {path.split("/", 1)[0] for path in tracked.splitlines()}


def named_paths(text: str, top_level: set[str]) -> set[str]:
    """Paths in ``text`` that start at one of ``top_level``'s entries, in prose, code spans, code blocks and links.
    A placeholder such as ``<service>`` becomes a glob; URLs and paths under other roots (``~/.cache``) are not
    the repository's and do not match (the look-behind refuses a start inside another word or path)."""
    roots = "|".join(re.escape(entry) for entry in sorted(top_level, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./~:<>-])(?:{roots})(?:/[^\s`)\]'\",;]*)?(?![\w-])")
    found = {re.sub(r"<[^>]+>", "*", match.group().rstrip(".:")) for match in pattern.finditer(text)}
    return {path for path in found if "/" in path or "." in path}  # "tests" alone is a word, not a path


def exists(path: str) -> bool:
    return any(REPO.glob(path)) if "*" in path else (REPO / path).exists()


def test_the_extractor_finds_paths_in_prose_code_and_links_and_nothing_else():
    text = ("(see each `services/lynx/*/settings.py` and `services/lynx/telemetry/cost.py`). `scripts/up.sh --x`, "
            "[docs/COSTS.md](docs/COSTS.md), docs/METRICS.md \"The collector\", `docker/<service>.Dockerfile`; "
            "not ~/.cache/lynx/run/, https://example.org/charts/x, services-mesh, `lynx.docs`, kube-prometheus-stack, "
            "the tests, docker.io.")
    assert named_paths(text, {"services", "scripts", "docs", "docker", "charts"}) == {
        "services/lynx/*/settings.py", "services/lynx/telemetry/cost.py", "scripts/up.sh", "docs/COSTS.md",
        "docs/METRICS.md", "docker/*.Dockerfile"}


def test_every_repository_path_the_readme_names_exists():
    paths = named_paths(README.read_text(), top_level_entries())
    assert len(paths) > 20  # the README names dozens: finding few means the pattern broke, not that all is well
    missing = sorted(path for path in paths if not exists(path))
    assert not missing, f"README.md names paths that do not exist: {missing}"
