import json
import logging
import os

import pytest
from prometheus_client import REGISTRY

from lynx.service.files import write_atomically
from lynx.service.watched_file import WatchedFile


def parse_numbers(content: bytes) -> list[int]:
    numbers = json.loads(content)
    if not isinstance(numbers, list):
        raise ValueError("not a list")
    return numbers


@pytest.fixture
def watched(tmp_path, request) -> WatchedFile[list[int]]:
    # A name of its own per test: the metrics are per process, labelled by name.
    return WatchedFile(tmp_path / "numbers.json", f"test-{request.node.name}", parse_numbers, absent=[])


def stale(watched: WatchedFile) -> float | None:
    return REGISTRY.get_sample_value("lynx_watched_file_stale", {"file": watched.name})


def unreadable_versions(watched: WatchedFile) -> float | None:
    return REGISTRY.get_sample_value("lynx_watched_file_unreadable_versions_total", {"file": watched.name})


def unreadable_events(caplog, watched: WatchedFile) -> list[dict]:
    return [r.fields for r in caplog.records
            if r.getMessage() == "watched_file_unreadable" and r.fields["file"] == watched.name]


def test_a_missing_file_is_absent_and_a_new_one_is_read(watched):
    assert (watched.refresh(), watched.value, stale(watched), unreadable_versions(watched)) == (False, [], 0, 0)
    write_atomically(watched.path, "[1, 2]")
    assert watched.refresh() and watched.value == [1, 2]
    assert not watched.refresh()  # unchanged: not read again


def test_a_bad_version_keeps_the_last_good_one_and_is_reported_once(watched, caplog):
    caplog.set_level(logging.ERROR, logger="lynx.service.watched_file")
    write_atomically(watched.path, "[1, 2]")
    watched.refresh()
    write_atomically(watched.path, "{not json")
    for _ in range(3):  # every request refreshes; the bad version is said once
        assert not watched.refresh() and watched.value == [1, 2]
    assert (stale(watched), unreadable_versions(watched)) == (1, 1)
    [event] = unreadable_events(caplog, watched)
    assert event["error"] == "JSONDecodeError" and event["kept"] == "the last good version"
    assert event["path"] == str(watched.path)

    write_atomically(watched.path, '{"parses": "but is refused"}')  # another bad version: said again
    assert not watched.refresh() and watched.value == [1, 2]
    assert (stale(watched), unreadable_versions(watched)) == (1, 2)
    assert [e["detail"] for e in unreadable_events(caplog, watched)][1] == "not a list"


def test_a_good_version_after_a_bad_one_is_served(watched):
    write_atomically(watched.path, "[1]")
    watched.refresh()
    write_atomically(watched.path, "[")
    watched.refresh()
    write_atomically(watched.path, "[3]")
    assert watched.refresh() and watched.value == [3]
    assert (stale(watched), unreadable_versions(watched)) == (0, 1)


def test_a_file_bad_from_the_start_serves_absent(watched, caplog):
    caplog.set_level(logging.ERROR, logger="lynx.service.watched_file")
    write_atomically(watched.path, "garbage")
    assert not watched.refresh() and watched.value == []
    assert stale(watched) == 1
    assert unreadable_events(caplog, watched)[0]["kept"] == "nothing (none was read yet)"


def test_a_replacement_is_seen_by_its_inode_alone(watched):
    write_atomically(watched.path, "[1]")
    watched.refresh()
    before = watched.path.stat()
    write_atomically(watched.path, "[2]")  # same size; same mtime forced below: only the inode tells
    os.utime(watched.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert watched.path.stat().st_ino != before.st_ino
    assert watched.refresh() and watched.value == [2]


def test_a_file_truncated_and_rewritten_in_place_is_reread(watched):
    write_atomically(watched.path, "[1, 2, 3]")
    watched.refresh()
    inode = watched.path.stat().st_ino
    watched.path.write_text("")  # what a writer that truncates first shows a reader for a moment
    assert not watched.refresh() and watched.value == [1, 2, 3] and stale(watched) == 1
    watched.path.write_text("[4]")
    assert watched.path.stat().st_ino == inode
    assert watched.refresh() and watched.value == [4] and stale(watched) == 0


def test_a_removed_file_is_absent_again_not_stale(watched):
    write_atomically(watched.path, "[1]")
    watched.refresh()
    write_atomically(watched.path, "[")
    watched.refresh()
    watched.path.unlink()
    assert watched.refresh() and watched.value == [] and stale(watched) == 0
