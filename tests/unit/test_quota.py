"""The storage report and the upload decision (quota.py): what counts, who holds it, will an upload fit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_gemini_files.naming import run_file_prefix
from airflow_gemini_files.quota import (
    OWNER_GENERATED,
    OWNER_OTHER,
    OWNER_REGISTERED,
    OWNER_RUN,
    PROJECT_STORAGE_BYTES,
    Holder,
    counts_against_quota,
    files_usage,
    human_bytes,
    owner_of,
    upload_refusal,
)
from airflow_gemini_files.refs import GENERATED, REGISTERED, UPLOADED, GeminiFileRef

RUN_A = run_file_prefix("nightly", "scheduled__2026-11-28")
RUN_B = run_file_prefix("nightly", "scheduled__2026-11-29")
T1 = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
T2 = datetime(2026, 11, 28, 2, 30, tzinfo=UTC)


def upload(prefix: str, n: int, size: int | None, **fields: object) -> GeminiFileRef:
    return GeminiFileRef(name=f"files/{prefix}-{n:025x}", size_bytes=size, source=UPLOADED, **fields)  # type: ignore[arg-type]


def test_the_quota_is_the_20_gib_the_live_api_names() -> None:
    assert PROJECT_STORAGE_BYTES == 21474836480


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (999, "999 bytes"),
        (1000, "1.0 kB"),
        (1500, "1.5 kB"),
        (999_000, "999.0 kB"),
        (1_000_000, "1.0 MB"),
        (312_400_000, "312.4 MB"),
        (999_900_000, "999.9 MB"),
        (1_000_000_000, "1.00 GB"),
        (21474836480, "21.47 GB"),
    ],
)
def test_sizes_read_in_the_largest_unit_they_reach(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_who_created_a_file() -> None:
    assert owner_of(upload(RUN_A, 1, 10)) == OWNER_RUN
    assert owner_of(GeminiFileRef(name="files/abc", source=UPLOADED)) == OWNER_OTHER
    assert owner_of(GeminiFileRef(name=f"files/{RUN_A}-{1:025x}", source=REGISTERED)) == OWNER_REGISTERED
    assert owner_of(GeminiFileRef(name="files/batch-out", source=GENERATED)) == OWNER_GENERATED


def test_uploads_and_files_stating_no_source_count_registered_and_generated_do_not() -> None:
    assert counts_against_quota(GeminiFileRef(name="files/a", source=UPLOADED))
    assert counts_against_quota(GeminiFileRef(name="files/a"))
    assert not counts_against_quota(GeminiFileRef(name="files/a", source=REGISTERED))
    assert not counts_against_quota(GeminiFileRef(name="files/a", source=GENERATED))


def listing() -> list[GeminiFileRef]:
    return [
        upload(RUN_A, 1, 400, state="ACTIVE", create_time=T2),
        upload(RUN_A, 2, 600, state="PROCESSING", create_time=T1),
        upload(RUN_B, 1, 300, state="ACTIVE"),
        GeminiFileRef(
            name="files/theirs",
            display_name="big.mp4",
            size_bytes=700,
            source=UPLOADED,
            state="ACTIVE",
            create_time=T1,
        ),
        GeminiFileRef(name="files/reg1", size_bytes=5000, source=REGISTERED, state="ACTIVE"),
        GeminiFileRef(name="files/out1", size_bytes=900, source=GENERATED),
        GeminiFileRef(name="files/nosize", source=UPLOADED, state="ACTIVE"),
    ]


def test_the_usage_sums_uploads_by_state_owner_and_run() -> None:
    usage = files_usage(listing(), quota_bytes=3000)
    assert usage.quota_bytes == 3000
    assert (usage.used.files, usage.used.bytes) == (5, 2000)
    assert usage.free_bytes == 1000
    assert usage.as_dict()["by_state"] == {
        "ACTIVE": {"files": 5, "bytes": 6400},
        "PROCESSING": {"files": 1, "bytes": 600},
        "STATE_UNSPECIFIED": {"files": 1, "bytes": 900},
    }
    assert usage.as_dict()["by_owner"] == {
        OWNER_RUN: {"files": 3, "bytes": 1300},
        OWNER_OTHER: {"files": 2, "bytes": 700},
        OWNER_REGISTERED: {"files": 1, "bytes": 5000},
        OWNER_GENERATED: {"files": 1, "bytes": 900},
    }
    assert usage.as_dict()["runs"] == {RUN_A: {"files": 2, "bytes": 1000}, RUN_B: {"files": 1, "bytes": 300}}


def test_holders_are_runs_and_single_foreign_files_biggest_first_with_their_oldest_file() -> None:
    usage = files_usage(listing(), quota_bytes=3000)
    assert usage.holders == (
        Holder(RUN_A, OWNER_RUN, 2, 1000, T1),
        Holder("files/theirs (big.mp4)", OWNER_OTHER, 1, 700, T1),
        Holder(RUN_B, OWNER_RUN, 1, 300, None),
        Holder("files/nosize (files/nosize)", OWNER_OTHER, 1, 0, None),
    )
    biggest = {"holder": RUN_A, "kind": OWNER_RUN, "files": 2, "bytes": 1000}
    assert usage.as_dict()["biggest_holders"][0] == biggest


def test_holders_of_equal_size_are_ordered_by_name() -> None:
    usage = files_usage([upload(RUN_B, 1, 5), upload(RUN_A, 1, 5)])
    assert [h.name for h in usage.holders] == sorted([RUN_A, RUN_B])


def test_the_report_keeps_ten_holders() -> None:
    usage = files_usage([GeminiFileRef(name=f"files/f{i:02d}", size_bytes=100 - i) for i in range(12)])
    assert len(usage.holders) == 12
    assert [h["holder"] for h in usage.as_dict()["biggest_holders"]] == [
        f"files/f{i:02d} (files/f{i:02d})" for i in range(10)
    ]
    assert usage.as_dict()["uploaded_files"] == 12
    assert usage.as_dict()["used_bytes"] == usage.as_dict()["quota_bytes"] - usage.as_dict()["free_bytes"]


def test_a_holder_describes_itself_with_its_oldest_file() -> None:
    assert Holder(RUN_A, OWNER_RUN, 2, 1500, T1).describe() == (
        f"run prefix {RUN_A} (2 file(s), 1.5 kB, oldest created 2026-11-28 01:00 UTC)"
    )
    assert (
        Holder("files/x (a\nb.pdf)", OWNER_OTHER, 1, 10).describe()
        == "files/x (a\\nb.pdf) (1 file(s), 10 bytes)"
    )


def test_the_usage_line_names_used_quota_owners_and_the_three_biggest_holders() -> None:
    usage = files_usage(listing(), quota_bytes=3000)
    assert usage.describe() == (
        "2.0 kB of 3.0 kB used (5 uploaded file(s); provider run 1.3 kB in 3 file(s), other uploads "
        "700 bytes in 2 file(s), registered 5.0 kB in 1 file(s), generated 900 bytes in 1 file(s)). "
        f"Biggest holders: run prefix {RUN_A} (2 file(s), 1.0 kB, oldest created 2026-11-28 01:00 UTC); "
        "files/theirs (big.mp4) (1 file(s), 700 bytes, oldest created 2026-11-28 01:00 UTC); "
        f"run prefix {RUN_B} (1 file(s), 300 bytes)"
    )
    assert usage.describe(holders=1).endswith("oldest created 2026-11-28 01:00 UTC)")
    assert files_usage([], quota_bytes=10).describe() == (
        "0 bytes of 10 bytes used (0 uploaded file(s); no files). Biggest holders: none"
    )


def test_an_upload_fits_up_to_the_last_byte() -> None:
    usage = files_usage([upload(RUN_A, 1, 600)], quota_bytes=1000)
    assert usage.fits(400)
    assert not usage.fits(401)
    assert upload_refusal(usage, 400, what="upload") is None
    assert files_usage([upload(RUN_A, 1, 1200)], quota_bytes=1000).free_bytes == 0


def test_a_refusal_names_the_upload_the_usage_and_the_fixes() -> None:
    usage = files_usage([upload(RUN_A, 1, 600)], quota_bytes=1000)
    message = upload_refusal(usage, 401, what="upload of 2 file(s) by task 'up'")
    assert message == (
        "upload of 2 file(s) by task 'up' (401 bytes) would pass the Files API storage quota: "
        f"{usage.describe()}. Uploads are kept 48 hours: delete files that are no longer needed "
        "(GeminiSweepFilesOperator finds this provider's orphans; GeminiDeleteFilesOperator deletes named "
        "files), wait for them to expire, or register the GCS objects instead (registered files use none "
        "of the quota)."
    )


def test_held_by_counts_only_uploads_by_either_form_of_their_name_once() -> None:
    usage = files_usage(
        [upload(RUN_A, 1, 600), GeminiFileRef(name="files/reg", size_bytes=50, source=REGISTERED)]
    )
    name = f"{RUN_A}-{1:025x}"
    assert usage.held_by([name]) == 600
    assert usage.held_by([f"files/{name}", name]) == 600  # one file, named twice
    assert usage.held_by(["files/reg", "files/unknown"]) == 0


def test_held_by_reads_the_full_name() -> None:
    usage = files_usage([upload(RUN_A, 1, 600)])
    assert usage.held_by([f"files/{RUN_A}-{1:025x}"]) == 600


def test_a_runs_oldest_file_is_the_oldest_whatever_the_listing_order_or_missing_times() -> None:
    files = [upload(RUN_A, 1, 1, create_time=T1), upload(RUN_A, 2, 1, create_time=T2), upload(RUN_A, 3, 1)]
    for order in (files, files[::-1]):
        [holder] = files_usage(order).holders
        assert holder.oldest == T1
