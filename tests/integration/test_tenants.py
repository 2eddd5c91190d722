"""`lynx tenant` (the real command line) on the tenants file a running gateway reads: a rotated or removed key is
refused at once, the new one served."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from .conftest import MODEL_NAME, Stack

pytestmark = pytest.mark.integration
TINY = {"model": MODEL_NAME, "temperature": 0, "max_tokens": 1, "retrieval_top_k": 0,
        "messages": [{"role": "user", "content": "Hi"}]}


def lynx_tenant(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "lynx.cli", "tenant", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def status(stack: Stack, key: str) -> int:
    return httpx.post(f"{stack.gateway.url}/v1/chat/completions", json=TINY, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}).status_code


def test_rotate_and_remove_revoke_the_key_in_a_running_gateway(stack: Stack, base_env):
    old = lynx_tenant(base_env, "add", "rotating")
    assert status(stack, old) == 200
    assert lynx_tenant(base_env, "show", "rotating") == old
    new = lynx_tenant(base_env, "rotate", "rotating")
    assert new != old and lynx_tenant(base_env, "show", "rotating") == new
    assert (status(stack, old), status(stack, new)) == (401, 200)
    lynx_tenant(base_env, "remove", "rotating")
    assert status(stack, new) == 401
    assert status(stack, stack.key) == 200  # the file's other tenants are untouched
