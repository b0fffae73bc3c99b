"""The progress protocol (recordio_pack.progress), its one renderer (commands._common.ProgressBar), --verbose."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from recordio_pack.aws.ec2 import Waiting
from recordio_pack.cli import main
from recordio_pack.commands._common import ProgressBar
from recordio_pack.progress import (
    Advanced, Done, NullProgress, Polled, Progress, Queued, RecordingProgress, Retrying, Task, start_task,
)


def shown(**flags: bool) -> argparse.Namespace:
    return argparse.Namespace(quiet=flags.get("quiet", False), json=flags.get("json", False))


def test_the_base_and_null_progress_take_every_event_and_do_nothing() -> None:
    for progress in (Progress(), NullProgress()):
        progress.on_queued(Queued("pack d", "images", 3))
        progress.on_progress(Advanced("pack d", 1, bytes_in=10, bytes_out=9))
        progress.on_progress(Retrying("f.tar", status="retry 1 in 2s: boom", attempt=1, delay=2.0, error="boom"))
        progress.on_done(Done("pack d"))
        progress.on_note("a note")


def test_a_task_announces_itself_then_reports_its_advance_and_end() -> None:
    recorder = RecordingProgress()
    task = start_task(recorder, "verifying", "bytes", total=30, done=10, status="resumed")
    assert task == Task(recorder, "verifying")
    task.advance(15)
    task.advance(-5, "rewound")
    task.done()
    recorder.on_note("heard")
    assert recorder.events == [Queued("verifying", "bytes", 30, 10, "resumed"), Advanced("verifying", 15),
                               Advanced("verifying", -5, "rewound"), Done("verifying")]
    assert recorder.amount() == 10 and recorder.amount("other") == 0 and recorder.notes == ["heard"]
    assert recorder.of(Queued) == [recorder.events[0]]


def test_waiting_reports_one_task_per_resource_from_its_first_poll() -> None:
    answers = iter([None, {"p": "10%"}, {"p": "55%"}, {"p": None}, {"p": "100%"}])

    def status(item: dict[str, Any]) -> tuple[str, float | None, bool]:
        percent = float(item["p"][:-1]) if item["p"] else None
        return ("completed" if percent == 100 else "pending"), percent, percent == 100

    recorder = RecordingProgress()
    waiting = Waiting(poll_seconds=0, sleep=lambda seconds: None, progress=recorder)
    waiting.until("waiting", lambda: next(answers), status, "snap-1", "eu-west-1", unit="percent")
    assert recorder.events[0] == Queued("snap-1 (eu-west-1)", "percent", 100)
    polls = recorder.of(Polled)
    assert [(event.state, event.percent) for event in polls] == [
        ("not-visible-yet", None), ("pending", 10), ("pending", 55), ("pending", None), ("completed", 100)]
    assert [event.amount for event in polls] == [0, 10, 45, 0, 45] and recorder.events[-1] == Done("snap-1 (eu-west-1)")


def test_the_bar_counts_resumed_work_without_rating_it_and_shows_byte_rates(capsys: pytest.CaptureFixture[str]
                                                                            ) -> None:
    with ProgressBar(shown()) as bar:
        bar.on_queued(Queued("pack imagenet", "images", 24, done=18))
        bar.on_progress(Advanced("pack imagenet", 6, bytes_in=6 << 20, bytes_out=3 << 20))
    err = capsys.readouterr().err
    assert "pack imagenet" in err and "24/24" in err and "img" in err
    assert "in " in err and " MiB/s, out " in err


def test_quiet_and_json_show_no_bar_and_no_note(capsys: pytest.CaptureFixture[str]) -> None:
    for flags in ({"quiet": True}, {"json": True}):
        with ProgressBar(shown(**flags)) as bar:
            bar.on_queued(Queued("fake", "images", 2))
            bar.on_progress(Advanced("fake", 2))
            bar.on_note("an unfinished upload was aborted")
    assert capsys.readouterr().err == ""


def test_a_new_task_replaces_the_bar_and_notes_print_above_it(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(shown(), skip_empty=True) as bar:
        bar.on_queued(Queued("verifying", "bytes", 0))  # nothing to verify: no bar
        bar.on_queued(Queued("uploading", "bytes", 2048))
        bar.on_note("continued an unfinished upload")
        bar.on_progress(Advanced("uploading", 2048))
    err = capsys.readouterr().err
    assert "verifying" not in err and "uploading" in err and "2.00k/2.00k" in err
    assert "continued an unfinished upload\n" in err


def test_one_labelled_bar_for_every_wait_and_one_bar_per_snapshot(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(shown(), label="waiting") as bar:
        for volume in ("vol-1", "vol-2"):
            bar.on_queued(Queued(volume, "polls"))
            bar.on_progress(Polled(volume, 1, "attached", state="attached"))
            bar.on_done(Done(volume))
    err = capsys.readouterr().err
    assert err.count("waiting: 0poll") == 1 and "2poll" in err and "vol-2 attached" in err
    with ProgressBar(shown(), per_task=True) as bar:
        for snapshot in ("snap-1", "snap-2 (eu-west-1)"):
            bar.on_queued(Queued(snapshot, "percent", 100))
        for snapshot in ("snap-1", "snap-2 (eu-west-1)"):
            bar.on_progress(Polled(snapshot, 100, "completed", state="completed", percent=100))
    err = capsys.readouterr().err
    assert "snap-1: 100%" in err and "snap-2 (eu-west-1): 100%" in err and "completed" in err


def test_no_bar_before_the_first_event(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(shown()) as bar:
        bar.on_progress(Advanced("nothing queued", 1))
        bar.on_done(Done("nothing queued"))
    assert capsys.readouterr().err == ""


def test_verbose_shows_the_library_log_in_one_prefixed_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fake", "-q", str(tmp_path / "tree"), "--classes", "2", "--images-per-class", "2"]) == 0
    assert main(["pack", "-q", "--workers", "1", str(tmp_path / "tree"), str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert main(["pack", "-q", "--workers", "1", str(tmp_path / "tree"), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err == ""  # default: warnings only
    assert main(["--verbose", "pack", "-q", "--workers", "1", str(tmp_path / "tree"), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err == f"recordio-pack pack: info: tree in {tmp_path / 'out'} is up to date: nothing to pack\n"
