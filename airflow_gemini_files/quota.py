"""The project's Files API storage: what counts against the 20 GB quota, who holds it, will an upload fit.

Gemini keeps uploaded files for 48 hours and refuses an upload that would take a project past 20 GB of
file storage (429 RESOURCE_EXHAUSTED naming ``file_storage_bytes``). Registered GCS objects hold no bytes
in Gemini and do not count (the docs: "no overall storage limit"); whether files Gemini generates (a
batch job's results) count is not documented, so they are reported apart and not counted (as the
emulator does; see ``docs/emulator-fidelity.md``).

:func:`files_usage` sums a listing of the project's files into a :class:`FilesUsage`: bytes and files by
state and by who created them (this provider's uploads by run prefix, registered files, generated files,
other uploads). :func:`upload_refusal` says why an upload of ``n`` bytes would not fit, naming the usage
and the biggest holders, or None when it fits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from airflow_gemini_files.naming import printable, run_prefix_of
from airflow_gemini_files.refs import GENERATED, REGISTERED, GeminiFileRef

PROJECT_STORAGE_BYTES = 20 * 1024**3
"""The Files API's storage per project: 21474836480 bytes (the limit the live 429 names)."""


OWNER_RUN = "provider run"
OWNER_REGISTERED = "registered"
OWNER_GENERATED = "generated"
OWNER_OTHER = "other uploads"


def human_bytes(size: int) -> str:
    """``size`` in the largest decimal unit it reaches: ``512 bytes``, ``1.5 kB``, ``312.4 MB``, ``20.00 GB``.

    One unit for every size would hide the holders that matter: in GB, a run holding 4 MB reads 0.00 GB.
    """
    if size < 1000:
        return f"{size} bytes"
    for unit, scale in (("kB", 1e3), ("MB", 1e6)):
        if size < scale * 1000:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e9:.2f} GB"


@dataclasses.dataclass(frozen=True)
class Tally:
    """How many files and bytes."""

    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> Tally:
        return Tally(self.files + 1, self.bytes + size)

    def as_dict(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds quota: a run prefix of this provider, or one file nobody here created."""

    name: str
    kind: str
    """:data:`OWNER_RUN` or :data:`OWNER_OTHER`."""
    files: int
    bytes: int
    oldest: datetime | None = None

    def describe(self) -> str:
        what = f"run prefix {self.name}" if self.kind == OWNER_RUN else printable(self.name)
        since = f", oldest created {self.oldest:%Y-%m-%d %H:%M} UTC" if self.oldest else ""
        return f"{what} ({self.files} file(s), {human_bytes(self.bytes)}{since})"


@dataclasses.dataclass(frozen=True)
class FilesUsage:
    """The project's file storage: what counts against the quota, by state and by owner."""

    quota_bytes: int
    used: Tally
    """Uploaded files: what counts against the quota."""
    by_state: dict[str, Tally]
    by_owner: dict[str, Tally]
    """:data:`OWNER_RUN` (every run of this provider), :data:`OWNER_REGISTERED`, :data:`OWNER_GENERATED`,
    :data:`OWNER_OTHER`."""
    runs: dict[str, Tally]
    """This provider's uploads (and batch inputs) by run prefix."""
    holders: tuple[Holder, ...]
    """Every holder of quota, biggest first."""
    uploaded: Mapping[str, int] = dataclasses.field(default_factory=dict, repr=False)
    """Bytes of each file that counts against the quota, by name (``files/<id>``)."""

    @property
    def free_bytes(self) -> int:
        return max(0, self.quota_bytes - self.used.bytes)

    def fits(self, size: int) -> bool:
        """Whether ``size`` more uploaded bytes stay within the quota."""
        return self.used.bytes + size <= self.quota_bytes

    def held_by(self, names: Iterable[str]) -> int:
        """Bytes the files of these names (``files/<id>`` or ``<id>``) hold against the quota now."""
        return sum(
            self.uploaded.get(name, 0) for name in {f"files/{n.removeprefix('files/')}" for n in names}
        )

    def describe(self, holders: int = 3) -> str:
        """One line: used of quota, by owner, the biggest holders."""
        owners = ", ".join(
            f"{owner} {human_bytes(t.bytes)} in {t.files} file(s)" for owner, t in self.by_owner.items()
        )
        top = "; ".join(holder.describe() for holder in self.holders[:holders]) or "none"
        return (
            f"{human_bytes(self.used.bytes)} of {human_bytes(self.quota_bytes)} used "
            f"({self.used.files} uploaded file(s); "
            f"{owners or 'no files'}). Biggest holders: {top}"
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready report (XCom, logs)."""
        return {
            "quota_bytes": self.quota_bytes,
            "used_bytes": self.used.bytes,
            "free_bytes": self.free_bytes,
            "uploaded_files": self.used.files,
            "by_state": {state: tally.as_dict() for state, tally in self.by_state.items()},
            "by_owner": {owner: tally.as_dict() for owner, tally in self.by_owner.items()},
            "runs": {prefix: tally.as_dict() for prefix, tally in self.runs.items()},
            "biggest_holders": [
                {"holder": h.name, "kind": h.kind, "files": h.files, "bytes": h.bytes}
                for h in self.holders[:10]
            ],
        }


def owner_of(ref: GeminiFileRef) -> str:
    """Who created a file, as far as its name and source tell: a run of this provider, or not."""
    if ref.source == REGISTERED:
        return OWNER_REGISTERED
    if ref.source == GENERATED:
        return OWNER_GENERATED
    return OWNER_RUN if run_prefix_of(ref.name) else OWNER_OTHER


def counts_against_quota(ref: GeminiFileRef) -> bool:
    """Uploaded files count; registered and generated ones do not. A file stating no source counts."""
    return ref.source not in (REGISTERED, GENERATED)


def files_usage(files: Iterable[GeminiFileRef], *, quota_bytes: int = PROJECT_STORAGE_BYTES) -> FilesUsage:
    """Sum a listing of the project's files (:meth:`GeminiHook.list_files`)."""
    used = Tally()
    by_state: dict[str, Tally] = {}
    by_owner: dict[str, Tally] = {}
    runs: dict[str, Tally] = {}
    oldest: dict[str, datetime] = {}
    others: list[Holder] = []
    uploaded: dict[str, int] = {}
    for ref in files:
        size = ref.size_bytes or 0
        state = ref.state or "STATE_UNSPECIFIED"
        owner = owner_of(ref)
        by_state[state] = by_state.get(state, Tally()).add(size)
        by_owner[owner] = by_owner.get(owner, Tally()).add(size)
        if not counts_against_quota(ref):
            continue
        used = used.add(size)
        uploaded[ref.name] = size
        prefix = run_prefix_of(ref.name)
        if prefix is None:
            others.append(Holder(f"{ref.name} ({ref.label})", OWNER_OTHER, 1, size, ref.create_time))
            continue
        runs[prefix] = runs.get(prefix, Tally()).add(size)
        created = ref.create_time or datetime.max.replace(tzinfo=UTC)
        oldest[prefix] = min(oldest.get(prefix, created), created)
    holders = [
        Holder(
            prefix,
            OWNER_RUN,
            tally.files,
            tally.bytes,
            oldest[prefix] if oldest[prefix].year < 9999 else None,
        )
        for prefix, tally in runs.items()
    ]
    ordered = sorted(holders + others, key=lambda h: (-h.bytes, h.name))
    return FilesUsage(quota_bytes, used, by_state, by_owner, runs, tuple(ordered), uploaded)


def upload_refusal(usage: FilesUsage, size: int, *, what: str) -> str | None:
    """Why ``what`` (``size`` bytes to upload) would pass the quota, or None when it fits."""
    if usage.fits(size):
        return None
    return (
        f"{what} ({human_bytes(size)}) would pass the Files API storage quota: {usage.describe()}. "
        "Uploads are kept 48 hours: delete files that are no longer needed (GeminiSweepFilesOperator "
        "finds this provider's orphans; GeminiDeleteFilesOperator deletes named files), wait for them to "
        "expire, or register the GCS objects instead (registered files use none of the quota)."
    )
