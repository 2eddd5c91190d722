"""The CpQU batch: run the fixed question set through the gateway, read the spend from Prometheus,
and write the week's row into a CpQU table: ~/.cache/lynx/work/cpqu/COSTS.md unless a document is named, the
repository's docs/COSTS.md when it is the one (the dashboard only copies that table)."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from lynx.telemetry.prometheus_api import PrometheusClient, label_value
from lynx.service.polling import wait_for

QUESTIONS_FILE = Path(__file__).with_name("questions.json")
TABLE_HEADER = ("| ISO week | run at (UTC) | questions | correct | quality | cost (EUR) "
                "| CpQU (EUR per correct answer) | week-over-week |\n| --- | --- | --- | --- | --- | --- | --- | --- |")


@dataclass(frozen=True)
class Question:
    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class CpquRow:
    week: str
    run_at: str
    questions: int
    correct: int
    cost_eur: float

    @property
    def quality(self) -> float:
        return self.correct / self.questions if self.questions else 0.0

    @property
    def cpqu(self) -> float | None:
        return self.cost_eur / self.correct if self.correct else None


def load_questions(path: Path = QUESTIONS_FILE) -> list[Question]:
    return [Question(q["question"], tuple(a.lower() for a in q["answers"])) for q in json.loads(path.read_text())]


def is_correct(reply: str, accepted: tuple[str, ...]) -> bool:
    """True when any accepted answer appears in the reply as a whole word."""
    text = reply.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(answer)}(?![a-z0-9])", text) for answer in accepted)


def iso_week(moment: dt.datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def week_over_week(current: CpquRow, rows: list[CpquRow]) -> str:
    """Change of CpQU against the previous ISO week's row, if there is one."""
    previous = [r for r in rows if r.week < current.week]
    if not previous or previous[-1].cpqu is None or current.cpqu is None:
        return "n/a"
    before = previous[-1]
    return f"{(current.cpqu - before.cpqu) / before.cpqu:+.1%} vs {before.week}"


def render_table(rows: list[CpquRow]) -> str:
    lines = [TABLE_HEADER]
    for index, row in enumerate(rows):
        cpqu = f"{row.cpqu:.3e}" if row.cpqu is not None else "n/a (no correct answer)"
        lines.append(f"| {row.week} | {row.run_at} | {row.questions} | {row.correct} | {row.quality:.0%} "
                     f"| {row.cost_eur:.3e} | {cpqu} | {week_over_week(row, rows[:index])} |")
    return "\n".join(lines)


def parse_table(table: str) -> list[CpquRow]:
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and re.fullmatch(r"\d{4}-W\d{2}", cells[0]):
            rows.append(CpquRow(cells[0], cells[1], int(cells[2]), int(cells[3]), float(cells[5])))
    return rows


def with_row(rows: list[CpquRow], row: CpquRow) -> list[CpquRow]:
    """The week's row replaces an earlier run of the same week; rows stay in week order."""
    return sorted([r for r in rows if r.week != row.week] + [row], key=lambda r: r.week)


def update_document(document: str, row: CpquRow, start: str, end: str) -> str:
    pattern = re.compile(re.escape(start) + r"(.*?)" + re.escape(end), re.S)
    match = pattern.search(document)
    if not match:
        raise ValueError(f"the document has no {start} ... {end} section")
    table = render_table(with_row(parse_table(match.group(1).strip()), row))
    return document[:match.start()] + f"{start}\n{table}\n{end}" + document[match.end():]


def default_document() -> Path:
    from lynx.service.settings import work_dir

    return work_dir("cpqu") / "COSTS.md"


def record(row: CpquRow, document: Path) -> None:
    """The week's row into ``document``'s CpQU table (a document that does not exist yet starts as the table alone);
    into the repository's docs/COSTS.md, the dashboards that copy the table are written again too."""
    from lynx.tools.dashboards.build import COSTS_DOC, CPQU_END, CPQU_START, write

    text = document.read_text() if document.exists() else f"{CPQU_START}\n{CPQU_END}\n"
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(update_document(text, row, CPQU_START, CPQU_END))
    if document.resolve() == COSTS_DOC.resolve():
        write()


def tenant_spend_query(tenant: str) -> str:
    return f"sum(lynx_tenant_cost_eur_total{{tenant={label_value(tenant)}}})"


def tenant_spend(prometheus_url: str, tenant: str) -> float:
    """What the tenant's counters hold now, summed over every gateway and outcome. Raises PrometheusError."""
    with PrometheusClient(prometheus_url) as prometheus:
        result = prometheus.query(tenant_spend_query(tenant))
    return float(result[0]["value"][1]) if result else 0.0


def evaluate(gateway_url: str, key: str, model: str, questions: list[Question]) -> tuple[int, float]:
    """(correct answers, cost the responses reported) for one pass over the questions."""
    correct, reported = 0, 0.0
    with httpx.Client(base_url=gateway_url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        for question in questions:
            response = client.post("/v1/chat/completions", json={
                "model": model, "temperature": 0, "max_tokens": 48,
                "messages": [{"role": "user", "content": question.question}]})
            response.raise_for_status()
            body = response.json()
            correct += is_correct(body["choices"][0]["message"]["content"], question.answers)
            reported += body["lynx"]["cost"]["total"]
    return correct, reported


def run(gateway_url: str, prometheus_url: str, key: str, tenant: str, model: str,
        wait_seconds: float = 90.0) -> CpquRow:
    """Evaluate, then take the cost from Prometheus once it has scraped the whole run."""
    questions = load_questions()
    before = tenant_spend(prometheus_url, tenant)
    correct, reported = evaluate(gateway_url, key, model, questions)
    spends: list[float] = []

    def counted() -> bool:
        spends.append(tenant_spend(prometheus_url, tenant) - before)
        return spends[-1] >= reported * (1 - 1e-6)

    wait_for(counted, wait_seconds, f"Prometheus to count the responses' {reported:.3e} EUR for tenant {tenant!r}",
             interval=1, explain=lambda: f"it shows {spends[-1]:.3e} EUR: is it scraping the gateway?", error=RuntimeError)
    spent = spends[-1]
    now = dt.datetime.now(dt.UTC)
    return CpquRow(iso_week(now), now.strftime("%Y-%m-%d %H:%M"), len(questions), correct, spent)
