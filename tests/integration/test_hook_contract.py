"""Contract: the provider's hook as the emulator and the real Gemini API answer it (`-m live` for the latter).

Every assertion is one a user could check against the real service; none steers the emulator. Each test
deletes what it creates (``hook_target.track``).
"""

from __future__ import annotations

import asyncio
import io
import re
from datetime import timedelta
from importlib import resources

import pytest
from live import HookTarget

from airflow_gemini_files.exceptions import GeminiFileGoneError, GeminiInputError
from airflow_gemini_files.hooks import policy

SAMPLES = resources.files("airflow_gemini_files.samples")


def sample(name: str) -> str:
    return str(SAMPLES.joinpath(name))


def test_upload_get_list_delete(hook_target: HookTarget) -> None:
    hook = hook_target.hook
    ref = hook.upload_file(sample("orders_2026-11.csv"))
    hook_target.track(ref)
    assert (ref.mime_type, ref.display_name, ref.source) == ("text/csv", "orders_2026-11.csv", "UPLOADED")
    assert ref.sha256_hex is not None
    fresh = hook.get_file(ref)
    assert (fresh.name, fresh.size_bytes, fresh.sha256_hex) == (ref.name, ref.size_bytes, ref.sha256_hex)
    assert fresh.expiration_time is not None
    assert fresh.create_time is not None
    assert timedelta(hours=47) < fresh.expiration_time - fresh.create_time <= policy.UPLOAD_LIFETIME
    assert ref.name in {listed.name for listed in hook.list_files()}
    assert hook.delete_file(ref) is True
    assert hook.delete_file(ref) is False  # already gone: the live API answers 403, the hook says False
    with pytest.raises(
        GeminiFileGoneError, match=re.escape(f"{ref.name} (orders_2026-11.csv) does not exist")
    ):
        hook.get_file(ref)


def test_a_stream_waits_until_active_then_a_model_reads_it(hook_target: HookTarget) -> None:
    hook = hook_target.hook
    data = (SAMPLES / "invoice_northwind_2026-11.pdf").read_bytes()
    ref = hook.upload_file(io.BytesIO(data), mime_type="application/pdf", display_name="invoice.pdf")
    hook_target.track(ref)
    [active] = hook.wait_for_active(ref, timeout=600, poll_interval=2)
    assert active.state == "ACTIVE"
    assert asyncio.run(hook.aget_file(ref)).state == "ACTIVE"  # the trigger's async path
    response = hook.generate_content(
        model=hook_target.model, contents=["What kind of document is this? One sentence.", active]
    )
    assert response.text
    assert response.usage_metadata is not None
    assert (response.usage_metadata.total_token_count or 0) > 0


def test_the_model_is_checked_and_a_typo_names_the_real_model(hook_target: HookTarget) -> None:
    hook = hook_target.hook
    model = hook_target.model
    assert hook.check_model(model) == model
    typo = model.replace("flash", "flsh") if "flash" in model else f"{model}x"
    with pytest.raises(GeminiInputError) as error:
        hook.check_model(typo)
    assert f"Gemini model {typo!r} was not found" in str(error.value)
    assert f"Did you mean {model!r}" in str(error.value)


def test_generate_with_an_unknown_model_is_refused_naming_it(hook_target: HookTarget) -> None:
    with pytest.raises(
        GeminiInputError, match=re.escape("Gemini model 'gemini-0.1-nonexistent' was not found")
    ):
        hook_target.hook.generate_content(model="gemini-0.1-nonexistent", contents="Hello")


def test_register_a_gcs_object_that_then_lives_by_its_own_expiry(
    hook_target: HookTarget, request: pytest.FixtureRequest
) -> None:
    uri = hook_target.gcs_uri(request)
    hook = hook_target.hook
    refs = hook.register_gcs_files([uri])
    hook_target.track(*refs)
    [ref] = refs
    assert (ref.source, ref.source_uri) == ("REGISTERED", uri)
    assert ref.create_time is not None
    assert ref.expiration_time is not None
    assert timedelta(days=29) < ref.expiration_time - ref.create_time <= policy.REGISTRATION_LIFETIME
    [active] = hook.wait_for_active(ref, timeout=600, poll_interval=2)
    response = hook.generate_content(model=hook_target.model, contents=["Summarise in one sentence.", active])
    assert response.text
