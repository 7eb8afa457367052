"""metrics.jsonl read back: a cut last line is dropped, damage before it stops the command."""

import json
import logging

import pytest

from noise_scale import errors, records
from noise_scale import metrics as metrics_lib

RECORDS = [{"examples_seen": 4000 * k, "train_loss": 1.0 / k} for k in (1, 2, 3)]


def write(tmp_path, data: bytes):
    (tmp_path / "metrics.jsonl").write_bytes(data)
    return str(tmp_path)


def jsonl(recs) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in recs).encode()


@pytest.mark.parametrize("tail", [b'{"examples_seen": 16000, "train_lo', b'{"examples_seen": 1',
                                  b"\x00\x00\x00\x00", b'{"examples_seen": 16000, "tr\n'])
def test_a_last_line_cut_by_a_kill_is_dropped_with_a_warning(tmp_path, caplog, tail):
    """It used to end the resume in a JSONDecodeError (or UnicodeDecodeError) traceback."""
    workdir = write(tmp_path, jsonl(RECORDS) + tail)
    with caplog.at_level(logging.WARNING):
        assert metrics_lib.read_metrics(workdir) == RECORDS
    assert "line 4 is cut short (a run killed while writing it); dropped" in caplog.text


@pytest.mark.parametrize("damage", [b'{"examples_seen": 80', b"\xff\xfe\x00garbage",
                                    b'["not", "a record"]'])
def test_a_damaged_line_before_the_last_exits_2_naming_the_line_and_the_fix(tmp_path, damage):
    workdir = write(tmp_path, jsonl(RECORDS[:1]) + damage + b"\n" + jsonl(RECORDS[1:]))
    with pytest.raises(errors.UsageError) as info:
        records.read_metrics(workdir)
    message = str(info.value)
    path = tmp_path / "metrics.jsonl"
    assert message.startswith(f"{path}: line 2 of 4 is damaged")
    assert f"`mv {path} {path}.damaged`" in message
    assert errors.exit_status(info.value) == 2


def test_a_whole_file_and_blank_lines_read_as_before(tmp_path, caplog):
    workdir = write(tmp_path, jsonl(RECORDS[:2]) + b"\n  \n" + jsonl(RECORDS[2:]))
    with caplog.at_level(logging.WARNING):
        assert records.read_metrics(workdir) == RECORDS
    assert caplog.text == ""
    assert records.read_metrics(str(tmp_path / "none")) == []


def test_the_records_a_resume_recomputes_are_counted_with_their_span():
    recs = [{"examples_seen": e} for e in (40_000, 80_000, 120_000, 130_000, 140_000, 160_000)]
    assert records.recomputed_note(recs, 120_000) == (
        "resuming at 120,000 examples seen (checkpoint); 3 records after it (to 160,000) "
        "are recomputed")
    assert records.recomputed_note(recs, 150_000) == (
        "resuming at 150,000 examples seen (checkpoint); 1 record after it (to 160,000) "
        "is recomputed")
    assert records.recomputed_note(recs, 0).startswith(
        "starting from the beginning (no checkpoint); 6 records after it (to 160,000)")
    assert records.recomputed_note(recs, 160_000) is None
    assert records.recomputed_note([], 0) is None
