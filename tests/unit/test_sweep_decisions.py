"""The sweeper's decisions (sweep.py): whose file is it, and does a running DAG run still need it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from airflow_gemini_files.exceptions import GeminiInputError
from airflow_gemini_files.ledger import FileRecord, RunRecord
from airflow_gemini_files.naming import run_file_prefix
from airflow_gemini_files.refs import REGISTERED, UPLOADED, GeminiFileRef
from airflow_gemini_files.sweep import (
    CLOCK_SKEW,
    FINISHED,
    HOW_LEDGER,
    HOW_MATCHED,
    HOW_NAME,
    LIVE,
    MATCH_WINDOW,
    NOT_OURS,
    RUN_FINISHED,
    RUN_LIVE,
    UNKNOWN,
    UNKNOWN_NO_TIME,
    UNKNOWN_OLD,
    UNKNOWN_YOUNG,
    Owner,
    Verdict,
    attribute,
    check_max_age,
    decide,
    plan,
    run_state_from_counts,
)

RUN_A = run_file_prefix("nightly", "scheduled__2026-11-28")
RUN_B = run_file_prefix("nightly", "scheduled__2026-11-29")
STARTED = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def uploaded(prefix: str, n: int = 1, **fields: object) -> GeminiFileRef:
    return GeminiFileRef(name=f"files/{prefix}-{n:025x}", source=UPLOADED, **fields)  # type: ignore[arg-type]


def registered(name: str, created: datetime | None, display_name: str | None = "a.pdf") -> GeminiFileRef:
    return GeminiFileRef(name=name, source=REGISTERED, create_time=created, display_name=display_name)


def registration(
    key: str,
    run_prefix: str = RUN_A,
    uris: tuple[str, ...] = ("gs://docs/in/a.pdf",),
    files: tuple[str, ...] | None = None,
    started: datetime | None = STARTED,
    kind: str = "register",
) -> FileRecord:
    return FileRecord(
        key=key,
        run_prefix=run_prefix,
        kind=kind,
        task="register[-1] (try 1)",
        uris=uris,
        files=files,
        started=started.timestamp() if started else None,
        ended=None,
    )


# check_max_age ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "hours"), [(24, 24.0), (0.5, 0.5), (timedelta(hours=36), 36.0), (timedelta(minutes=90), 1.5)]
)
def test_the_age_limit_is_hours_or_a_timedelta(value: object, hours: float) -> None:
    assert check_max_age(value) == timedelta(hours=hours)


@pytest.mark.parametrize("value", [None, "24", True, [24]])
def test_a_sweep_without_a_numeric_age_limit_is_refused(value: object) -> None:
    with pytest.raises(GeminiInputError) as error:
        check_max_age(value)
    assert str(error.value) == (
        f"max_age_hours={value!r} is not a number of hours: a sweep needs an age limit (e.g. "
        "max_age_hours=24) so that it never deletes files a run without a ledger record still uses."
    )


@pytest.mark.parametrize("value", [0, -1, 0.0, math.nan, math.inf, timedelta(0), timedelta(hours=-1)])
def test_an_age_limit_must_be_a_positive_finite_number_of_hours(value: object) -> None:
    with pytest.raises(GeminiInputError) as error:
        check_max_age(value)
    assert str(error.value) == (
        f"max_age_hours={value!r} must be a positive number of hours (e.g. 24); files of runs the "
        "sweeper cannot identify are deleted only once older than that."
    )


# attribute -------------------------------------------------------------------------------------------
def test_an_upload_belongs_to_the_run_its_name_carries_before_any_ledger_record() -> None:
    mine = uploaded(RUN_A)
    ledger_says_b = registration("files/b/claim", run_prefix=RUN_B, files=(mine.name,), kind="claim")
    owners = attribute([mine], [ledger_says_b])
    assert owners == {mine.name: Owner(RUN_A, HOW_NAME)}


def test_files_the_ledger_names_belong_to_its_run_and_others_are_not_ours() -> None:
    claim = registration("files/a/claim~1", files=("files/results-1",), kind="claim")
    answered = registration("files/a/register~2", files=("files/reg-1", "files/reg-2"))
    files = [GeminiFileRef(name=n) for n in ("files/results-1", "files/reg-1", "files/other")]
    assert attribute(files, [claim, answered]) == {
        "files/results-1": Owner(RUN_A, HOW_LEDGER, "files/a/claim~1"),
        "files/reg-1": Owner(RUN_A, HOW_LEDGER, "files/a/register~2"),
        "files/reg-2": Owner(RUN_A, HOW_LEDGER, "files/a/register~2"),
    }


@pytest.mark.parametrize(
    ("created", "matched"),
    [
        (STARTED, True),
        (STARTED - CLOCK_SKEW, True),
        (STARTED - CLOCK_SKEW - timedelta(seconds=1), False),
        (STARTED + MATCH_WINDOW, True),
        (STARTED + MATCH_WINDOW + timedelta(seconds=1), False),
        (None, False),
    ],
)
def test_an_unanswered_registration_matches_registered_files_created_within_its_window(
    created: datetime | None, matched: bool
) -> None:
    record = registration("files/a/register~1")
    owners = attribute([registered("files/reg-1", created)], [record])
    assert owners == ({"files/reg-1": Owner(RUN_A, HOW_MATCHED, "files/a/register~1")} if matched else {})


def test_the_window_constants_cover_a_register_call_with_its_retries() -> None:
    assert timedelta(minutes=15) == MATCH_WINDOW
    assert timedelta(minutes=1) == CLOCK_SKEW


@pytest.mark.parametrize(
    ("uri", "display_name", "matched"),
    [
        ("gs://docs/in/a.pdf", "a.pdf", True),
        ("gs://docs/in/a.pdf/", "a.pdf", True),
        ("gs://docs/in/a.pdf", "gs://docs/in/a.pdf", True),
        ("gs://docs/in/a.pdf", None, True),
        ("gs://docs/in/a.pdf", "", True),
        ("gs://docs/in/a.pdf", "b.pdf", False),
        ("gs://docs/in/a.pdf", "in", False),
    ],
)
def test_a_match_needs_the_display_name_of_a_recorded_object_when_there_is_one(
    uri: str, display_name: str | None, matched: bool
) -> None:
    record = registration("files/a/register~1", uris=(uri,))
    owners = attribute([registered("files/reg-1", STARTED, display_name)], [record])
    assert ("files/reg-1" in owners) is matched


def test_only_unanswered_registrations_with_a_start_time_match_and_only_registered_files() -> None:
    created = STARTED + timedelta(minutes=1)
    files = [
        registered("files/reg-1", created),
        GeminiFileRef(name="files/up-1", source=UPLOADED, create_time=created, display_name="a.pdf"),
    ]
    assert attribute(files, [registration("k1", files=())]) == {}  # answered: names nothing here
    assert attribute(files, [registration("k2", kind="claim")]) == {}
    assert attribute(files, [registration("k3", started=None)]) == {}
    assert attribute(files, [registration("k4")]) == {"files/reg-1": Owner(RUN_A, HOW_MATCHED, "k4")}


def test_a_file_another_record_names_is_never_matched() -> None:
    answered = registration("files/b/register~1", run_prefix=RUN_B, files=("files/reg-1",))
    unanswered = registration("files/a/register~1")
    owners = attribute([registered("files/reg-1", STARTED)], [unanswered, answered])
    assert owners == {"files/reg-1": Owner(RUN_B, HOW_LEDGER, "files/b/register~1")}


def test_a_file_matching_records_of_two_runs_is_ambiguous_and_not_ours() -> None:
    records = [registration("files/a/register~1"), registration("files/b/register~1", run_prefix=RUN_B)]
    assert attribute([registered("files/reg-1", STARTED)], records) == {}


def test_two_unanswered_records_of_one_run_match_its_file() -> None:
    records = [registration("files/a/register~1"), registration("files/a/register~2")]
    owners = attribute([registered("files/reg-1", STARTED)], records)
    assert owners == {"files/reg-1": Owner(RUN_A, HOW_MATCHED, "files/a/register~1")}


def test_more_matching_files_than_the_record_registered_means_someone_elses_are_among_them() -> None:
    files = [registered("files/reg-1", STARTED), registered("files/reg-2", STARTED)]
    assert attribute(files, [registration("files/a/register~1")]) == {}
    two = registration("files/a/register~1", uris=("gs://docs/in/a.pdf", "gs://docs/x/a.pdf"))
    assert set(attribute(files, [two])) == {"files/reg-1", "files/reg-2"}


# decide ----------------------------------------------------------------------------------------------
RUN = RunRecord(RUN_A, "nightly", "scheduled__2026-11-28")
DAY = timedelta(hours=24)


def verdict(state: str, *, age: timedelta | None, run: RunRecord | None = RUN) -> Verdict:
    ref = uploaded(RUN_A, create_time=NOW - age if age is not None else None)
    return decide(ref, Owner(RUN_A, HOW_NAME), run, state, now=NOW, max_age=timedelta(hours=24))


def test_a_file_that_is_not_ours_is_kept() -> None:
    ref = GeminiFileRef(name="files/theirs", create_time=NOW - timedelta(days=9))
    result = decide(ref, None, None, FINISHED, now=NOW, max_age=timedelta(hours=1))
    assert (result.delete, result.rule) == (False, NOT_OURS)
    assert result.reason == "not created by this provider (or not traceable to a run)"


def test_the_runs_state_decides_whatever_the_files_age() -> None:
    live = verdict(LIVE, age=timedelta(days=30))
    assert (live.delete, live.rule) == (False, RUN_LIVE)
    assert live.reason == "its DAG run nightly / scheduled__2026-11-28 is still running"
    done = verdict(FINISHED, age=timedelta(minutes=1))
    assert (done.delete, done.rule) == (True, RUN_FINISHED)
    assert done.reason == "its DAG run nightly / scheduled__2026-11-28 has finished"
    assert (done.owner, done.run) == (Owner(RUN_A, HOW_NAME), RUN)


def test_a_file_of_an_unknown_run_goes_once_it_reaches_the_max_age() -> None:
    old = verdict(UNKNOWN, age=timedelta(hours=24), run=None)
    assert (old.delete, old.rule) == (True, UNKNOWN_OLD)
    assert old.reason == (
        f"its run (run prefix {RUN_A}) is unknown to Airflow and it is 24.0 h old (max age 24 h)"
    )
    young = verdict(UNKNOWN, age=timedelta(hours=23, minutes=57))
    assert (young.delete, young.rule) == (False, UNKNOWN_YOUNG)
    assert young.reason == (
        "its run (nightly / scheduled__2026-11-28) is unknown and it is only 23.9 h old (max age 24 h)"
    )
    timeless = verdict(UNKNOWN, age=None)
    assert (timeless.delete, timeless.rule) == (False, UNKNOWN_NO_TIME)
    assert timeless.reason == (
        "its run (nightly / scheduled__2026-11-28) is unknown and Gemini states no creation time"
    )


def test_a_verdict_reports_the_file_its_run_and_the_rule() -> None:
    ref = uploaded(RUN_A, display_name="a.pdf", size_bytes=10, create_time=STARTED)
    result = decide(ref, Owner(RUN_A, HOW_NAME), RUN, FINISHED, now=NOW, max_age=timedelta(hours=1))
    assert result.as_dict() == {
        "file": ref.name,
        "display_name": "a.pdf",
        "source": UPLOADED,
        "bytes": 10,
        "created": "2026-11-28T03:00:00+00:00",
        "run_prefix": RUN_A,
        "dag_id": "nightly",
        "run_id": "scheduled__2026-11-28",
        "traced_by": HOW_NAME,
        "rule": RUN_FINISHED,
        "reason": "its DAG run nightly / scheduled__2026-11-28 has finished",
    }
    theirs = decide(GeminiFileRef(name="files/x"), None, None, UNKNOWN, now=NOW, max_age=timedelta(hours=1))
    assert theirs.as_dict() == {
        "file": "files/x",
        "display_name": None,
        "source": None,
        "bytes": 0,
        "created": None,
        "run_prefix": None,
        "dag_id": None,
        "run_id": None,
        "traced_by": None,
        "rule": NOT_OURS,
        "reason": "not created by this provider (or not traceable to a run)",
    }


# plan ------------------------------------------------------------------------------------------------
def test_a_plan_asks_each_runs_state_once_and_judges_runs_without_a_record_by_age() -> None:
    old = NOW - timedelta(hours=30)
    files = [
        uploaded(RUN_A, 1, create_time=NOW),
        uploaded(RUN_A, 2, create_time=NOW),
        uploaded(RUN_B, 1, create_time=old),
        GeminiFileRef(name="files/theirs", create_time=old),
    ]
    asked: list[str] = []

    def run_state(run: RunRecord) -> str:
        asked.append(run.run_prefix)
        return FINISHED

    verdicts = plan(
        files, runs={RUN_A: RUN}, records=[], run_state=run_state, now=NOW, max_age=timedelta(hours=24)
    )
    assert asked == [RUN_A]
    assert [(v.file.name, v.delete, v.rule) for v in verdicts] == [
        (files[0].name, True, RUN_FINISHED),
        (files[1].name, True, RUN_FINISHED),
        (files[2].name, True, UNKNOWN_OLD),
        ("files/theirs", False, NOT_OURS),
    ]
    assert verdicts[2].run is None


@pytest.mark.parametrize(
    ("live", "known", "state"), [(1, 1, LIVE), (2, 0, LIVE), (0, 1, FINISHED), (0, 0, UNKNOWN)]
)
def test_a_runs_state_from_airflows_counts(live: int, known: int, state: str) -> None:
    assert run_state_from_counts(live, known) == state


# Found by mutation testing: each check skips one file or record and goes on with the next.
def test_an_answered_record_before_an_unanswered_one_does_not_hide_it() -> None:
    records = [registration("files/a/claim~1", kind="claim", files=("files/results",)), registration("k")]
    owners = attribute([registered("files/reg-1", STARTED)], records)
    assert owners["files/reg-1"] == Owner(RUN_A, HOW_MATCHED, "k")


@pytest.mark.parametrize(
    "skipped",
    [
        GeminiFileRef(name="files/up", source=UPLOADED, create_time=STARTED, display_name="a.pdf"),
        registered("files/late", STARTED + MATCH_WINDOW + timedelta(minutes=1)),
        registered("files/other-name", STARTED, "b.pdf"),
    ],
    ids=["uploaded", "outside-the-window", "other-display-name"],
)
def test_a_file_that_does_not_match_does_not_stop_the_match_of_the_next(skipped: GeminiFileRef) -> None:
    owners = attribute([skipped, registered("files/reg-1", STARTED)], [registration("k")])
    assert owners == {"files/reg-1": Owner(RUN_A, HOW_MATCHED, "k")}


def test_an_ambiguous_match_leaves_the_other_files_matches_alone() -> None:
    two_runs = registered("files/reg-x", STARTED, "x.pdf")
    records = [
        registration("a1", uris=("gs://docs/x.pdf",)),
        registration("b1", run_prefix=RUN_B, uris=("gs://docs/x.pdf",)),
        registration("a2", uris=("gs://docs/y.pdf",)),
    ]
    owners = attribute([two_runs, registered("files/reg-y", STARTED, "y.pdf")], records)
    assert owners == {"files/reg-y": Owner(RUN_A, HOW_MATCHED, "a2")}

    crowded = [registered("files/reg-1", STARTED, "x.pdf"), registered("files/reg-2", STARTED, "x.pdf")]
    owners = attribute([*crowded, registered("files/reg-y", STARTED, "y.pdf")], records[:1] + records[2:])
    assert owners == {"files/reg-y": Owner(RUN_A, HOW_MATCHED, "a2")}


def test_an_object_name_ending_in_x_matches_its_display_name() -> None:
    record = registration("k", uris=("gs://docs/mail/INBOX",))
    assert "files/reg-1" in attribute([registered("files/reg-1", STARTED, "INBOX")], [record])


@pytest.mark.parametrize("state", [LIVE, FINISHED, UNKNOWN])
@pytest.mark.parametrize("age", [None, timedelta(hours=1), timedelta(hours=30)])
def test_every_verdict_reports_its_file_owner_and_run(state: str, age: timedelta | None) -> None:
    result = verdict(state, age=age)
    report = result.as_dict()
    assert result.file == uploaded(RUN_A, create_time=NOW - age if age is not None else None)
    assert result.owner == Owner(RUN_A, HOW_NAME)
    assert result.run == RUN
    assert report["run_prefix"] == RUN_A
    assert report["run_id"] == "scheduled__2026-11-28"
    assert report["traced_by"] == HOW_NAME


def test_the_age_in_a_reason_is_in_hours_to_a_tenth() -> None:
    old = verdict(UNKNOWN, age=timedelta(hours=100, minutes=3, seconds=36))  # 100.06 h
    assert "it is 100.1 h old (max age 24 h)" in old.reason


def test_a_plan_reports_the_run_of_each_file() -> None:
    files = [uploaded(RUN_A, create_time=NOW)]
    [result] = plan(files, runs={RUN_A: RUN}, records=[], run_state=lambda run: LIVE, now=NOW, max_age=DAY)
    assert result.run == RUN
    assert result.as_dict()["dag_id"] == "nightly"
