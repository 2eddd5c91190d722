"""`lynx chaos`'s own tenants on the local target: made for the run, gone after it."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from lynx.tools.chaos.cli import load_keys
from lynx.accounting.tenants import TenantRegistry


def test_the_local_tenants_chaos_makes_are_removed_after_the_run(tmp_path):
    registry = TenantRegistry(tmp_path / "tenants.json")
    registry.add("demo")
    target = SimpleNamespace(tenants_file=tmp_path / "tenants.json")  # what LocalTarget offers load_keys
    with load_keys(argparse.Namespace(key=[], target="local"), target) as keys:
        assert {registry.authenticate(key).id for key in keys} == {"chaos-1", "chaos-2"}
    assert registry.known_ids() == {"demo"}


def test_keys_given_are_used_as_they_are(tmp_path):
    with load_keys(argparse.Namespace(key=["k1", "k2"], target="kubernetes"), None) as keys:
        assert keys == ("k1", "k2")
