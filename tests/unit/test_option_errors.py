"""The budget commands refuse bad options in one sentence naming the option, never with pydantic's report."""

from __future__ import annotations

import pytest

from lynx.cli import main


@pytest.fixture
def budgets(tmp_path, monkeypatch):
    monkeypatch.setenv("LYNX_BUDGETS_BUDGETS_FILE", str(tmp_path / "budgets.yaml"))
    monkeypatch.setenv("LYNX_BUDGETS_STATE_FILE", str(tmp_path / "state.json"))
    main(["budget", "set", "demo", "--cap", "1"])
    return tmp_path / "budgets.yaml"


def refusal(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    return str(refused.value.code)


@pytest.mark.parametrize(("argv", "says"), [
    (["budget", "raise", "demo", "--amount", "-1", "--reason", "x"],
     "lynx budget raise: --amount should be greater than 0 (not -1) and --reason should have at least 3 characters "
     "(not 'x')"),
    (["budget", "raise", "demo", "--amount", "1", "--reason", "why not", "--hours", "80"],
     "lynx budget raise: a temporary raise lasts more than 0 and at most 72 hours, not 80"),
    (["budget", "set", "demo", "--cap", "-2", "--warning", "150"],
     "lynx budget set: --cap should be greater than or equal to 0 (not -2) and --warning should be less than or equal "
     "to 100 (not 150)"),
    (["budget", "set", "demo", "--timezone", "Mars/Olympus"],
     "lynx budget set: --timezone takes an IANA zone such as Europe/Paris, not 'Mars/Olympus'"),
])
def test_a_refused_option_is_named_in_one_sentence(budgets, argv, says):
    before = budgets.read_text()
    message = refusal(argv)
    assert message == says
    assert "pydantic" not in message and "\n" not in message
    assert budgets.read_text() == before  # nothing written


def test_budget_set_opts_a_tenant_into_an_unreachable_allowance_and_out_again(budgets):
    main(["budget", "set", "demo", "--unreachable-allowance", "0.05"])
    assert "per_gateway_eur: 0.05" in budgets.read_text()
    assert refusal(["budget", "set", "demo", "--unreachable-allowance", "-1"]).startswith(
        "lynx budget set: --unreachable-allowance")
    main(["budget", "set", "demo", "--unreachable-allowance", "0"])
    assert "unreachable_allowance" not in budgets.read_text() and "daily_cap_eur: 1" in budgets.read_text()


def test_budget_remove_deletes_the_budget_and_says_when_there_is_none(budgets, capsys):
    main(["budget", "remove", "demo"])
    assert "budget of demo removed" in capsys.readouterr().out
    assert refusal(["budget", "why", "demo"]).startswith("tenant 'demo' has no budget")
    assert refusal(["budget", "remove", "demo"]) == "lynx budget remove: tenant 'demo' has no budget"


@pytest.mark.parametrize(("content", "says"), [
    ("- {tenant: x, daily_cap_eur: -1}\n", "budget 1 of {path} is refused: daily_cap_eur should be greater than or "
                                           "equal to 0 (not -1); fix it (`lynx budget set`) or remove it"),
    ("- {tenant: x\n", "{path} is not YAML (expected ',' or '}}', but got '<stream end>'): fix it or remove it"),
    ("tenant: x\n", "{path} holds a dict, not a list of budgets: fix it or remove it"),
])
def test_a_broken_budgets_file_is_named_with_what_to_do(budgets, content, says):
    budgets.write_text(content)
    assert refusal(["budget", "export"]) == "lynx budget export: " + says.format(path=budgets)


def test_kube_without_a_cluster_says_how_to_name_one(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    message = refusal(["budget", "why", "demo", "--kube"])
    assert message.startswith("lynx budget why: --kube found no cluster to reach") and "KUBECONFIG" in message
    assert "Traceback" not in message and "\n" not in message
