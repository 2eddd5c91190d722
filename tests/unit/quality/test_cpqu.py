import pytest

from lynx.tools.dashboards.build import COSTS_DOC, DASHBOARDS_DIR, cpqu_table
from lynx.tools.quality.cpqu import (
    TABLE_HEADER, CpquRow, default_document, is_correct, load_questions, parse_table, record, render_table,
    update_document, with_row,
)

START, END = "<!-- s -->", "<!-- e -->"


def row(week: str, correct: int, cost: float) -> CpquRow:
    return CpquRow(week, "2026-11-24 07:00", 12, correct, cost)


def test_answers_must_appear_as_whole_words():
    assert is_correct("The capital of France is Paris.", ("paris",))
    assert is_correct("2 + 3 = 5", ("5", "five"))
    assert not is_correct("It is 15.", ("5",))
    assert not is_correct("undefined", ("def",))


def test_the_question_set_has_answers():
    questions = load_questions()
    assert len(questions) >= 10 and all(q.answers for q in questions)


def test_table_round_trips_and_computes_cpqu_and_weekly_delta():
    rows = [row("2026-W47", 8, 8e-5), row("2026-W48", 10, 5e-5)]
    table = render_table(rows)
    assert parse_table(table) == rows
    assert "1.000e-05" in table and "5.000e-06" in table
    assert "-50.0% vs 2026-W47" in table.splitlines()[-1]
    assert table.splitlines()[-2].endswith("| n/a |")


def test_a_rerun_in_the_same_week_replaces_that_weeks_row():
    rows = with_row([row("2026-W48", 5, 1e-5)], row("2026-W48", 9, 2e-5))
    assert rows == [row("2026-W48", 9, 2e-5)]


def test_no_correct_answer_has_no_cpqu():
    assert row("2026-W48", 0, 1e-5).cpqu is None
    assert "n/a (no correct answer)" in render_table([row("2026-W48", 0, 1e-5)])


def test_the_document_keeps_everything_outside_its_section():
    document = f"intro\n{START}\n{TABLE_HEADER}\n{END}\noutro\n"
    updated = update_document(document, row("2026-W48", 6, 3e-5), START, END)
    assert updated.startswith("intro\n") and updated.endswith(f"{END}\noutro\n")
    assert len(parse_table(updated.split(START)[1].split(END)[0].strip())) == 1
    with pytest.raises(ValueError):
        update_document("no section", row("2026-W48", 6, 3e-5), START, END)


def test_without_a_document_the_rows_go_to_a_working_file_outside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    tracked = {path: path.read_bytes() for path in (COSTS_DOC, *DASHBOARDS_DIR.glob("*.json"))}
    document = default_document()
    assert document == tmp_path / ".cache" / "lynx" / "work" / "cpqu" / "COSTS.md"
    record(row("2026-W47", 8, 8e-5), document)
    record(row("2026-W48", 10, 5e-5), document)
    assert [r.week for r in parse_table(cpqu_table(document))] == ["2026-W47", "2026-W48"]
    assert {path: path.read_bytes() for path in tracked} == tracked
