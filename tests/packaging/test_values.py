"""Every value of the chart is documented in values.yaml and described by values.schema.json."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "lynx"
DEPENDENCIES = {"kube-prometheus-stack", "tempo"}


def undocumented_leaves(lines: list[str]) -> list[str]:
    """Keys holding a value that neither they nor an ancestor document with a `# --` comment (which,
    as helm-docs reads it, may go on over further `#` lines)."""
    missing: list[str] = []
    ancestors: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    previous = last = ""
    comment = ""  # first line of the latest block of comment lines
    for line in lines:
        stripped = line.strip()
        is_key = stripped and not stripped.startswith(("#", "-")) and ":" in stripped
        if not is_key:
            if stripped.startswith("#") and not last.startswith("#"):
                comment = stripped
            previous, last = stripped or previous, stripped
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = stripped.partition(":")
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        documented = (previous.startswith("#") and comment.startswith("# --")) or any(flag for _, flag in ancestors)
        if value.strip() and not documented:
            missing.append(key)
        ancestors.append((indent, documented))
        previous = last = stripped
    return missing


def test_the_checker_finds_an_undocumented_value():
    assert undocumented_leaves(["block:", "  # -- documented", "  a: 1", "  b: 2", "# -- doc", "c:", "  d: 3"]) == ["b"]


def test_the_checker_reads_a_doc_comment_over_several_lines():
    assert undocumented_leaves(["# -- documented", "# over two lines", "a: 1", "# a plain comment", "# more", "b: 2",
                                "# -- doc", "c: 3", "- item", "d: 4", "# -- doc", "", "# plain", "e: 5"]) == ["b", "d", "e"]


def test_every_value_is_documented():
    assert undocumented_leaves((CHART / "values.yaml").read_text().splitlines()) == []


def test_the_defaults_validate_against_the_schema():
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()),
                        json.loads((CHART / "values.schema.json").read_text()))


def schema_paths(schema: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        if key not in DEPENDENCIES:
            paths |= schema_paths(sub, path + ".")
    return paths


def value_paths(values: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and key not in DEPENDENCIES and not key.endswith(("SecurityContext", "resources")):
            paths |= value_paths(value, path + ".")
    return paths


def test_the_schema_describes_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    free_form = {"commonLabels", "tenants.keys", "networkPolicy.monitoringNamespaceSelector",
                 "monitoring.extraSelectorLabels"}
    missing = {p for p in value_paths(values) - schema_paths(schema)
               if not any(p.startswith(f + ".") for f in free_form) and ".settings." not in p}
    assert not missing, sorted(missing)


def test_the_schema_refuses_unknown_keys_and_bad_values():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for broken in ({**values, "replicas": 3},
                   {**values, "tenants": {"keys": {"acme": "not-a-hash"}}},
                   {**values, "otlp": {**values["otlp"], "endpoint": "collector:4318"}},
                   {**values, "helmTest": {"enabled": True, "apiKey": "short"}},
                   {**values, "helmTest": {"enabled": True, "apiKey": "a key with spaces in it"}}):
        try:
            jsonschema.validate(broken, schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {broken}")
