"""Contract: the Files API as both the emulator and the real service answer it (``-m live`` for the latter).

Every assertion here is one a user could check against the real API; the fidelity ledger
(``docs/emulator-fidelity.md``) names the evidence for each.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from google import genai
from google.genai import errors, types

from .conftest import Target

MODEL = "gemini-2.5-flash"
_FRACTION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z$")


def _client_with_key(target: Target, key: str) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=target.base_url))


def _upload_expecting_refusal(target: Target, data: bytes, mime_type: str) -> errors.ClientError:
    """Upload that should be refused; if the service takes it after all, the file is still cleaned up."""
    try:
        target.upload(data, mime_type)
    except errors.ClientError as error:
        return error
    pytest.fail(f"an upload as {mime_type} was accepted")


def test_upload_get_list_delete(target: Target) -> None:
    file = target.upload(b"contract test\n", "text/plain", display_name="contract roundtrip")
    assert file.name is not None
    assert (file.mime_type, file.size_bytes, file.display_name) == ("text/plain", 14, "contract roundtrip")
    assert file.source is not None
    assert file.source.name == "UPLOADED"
    assert target.client.files.get(name=file.name).name == file.name
    assert file.name in [f.name for f in target.client.files.list(config={"page_size": 100})]
    target.client.files.delete(name=file.name)
    with pytest.raises(errors.ClientError) as info:
        target.client.files.get(name=file.name)
    assert (info.value.code, info.value.status) == (403, "PERMISSION_DENIED")


def test_a_file_that_never_existed_is_permission_denied(target: Target) -> None:
    with pytest.raises(errors.ClientError) as info:
        target.client.files.get(name="files/contract-no-such-file")
    assert (info.value.code, info.value.status) == (403, "PERMISSION_DENIED")
    assert "You do not have permission to access the File" in (info.value.message or "")


@pytest.mark.parametrize(
    "mime_type",
    [
        "application/cu-seeme",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "jsonl",
    ],
)
def test_unsupported_mime_type_is_refused_at_upload(target: Target, mime_type: str) -> None:
    error = _upload_expecting_refusal(target, b"int main() { return 0; }\n", mime_type)
    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    assert error.message == f"Unsupported MIME type: {mime_type}"


@pytest.mark.parametrize(
    "mime_type", ["text/plain", "text/markdown", "text/x-python", "text/csv", "text/html"]
)
def test_documented_text_types_are_accepted(target: Target, mime_type: str) -> None:
    file = target.upload(b"print('hello')\n", mime_type)
    assert file.mime_type == mime_type


@pytest.mark.parametrize(
    ("mime_type", "data"), [("image/gif", b"GIF89a\x01\x00\x01\x00"), ("image/jpg", b"\xff\xd8")]
)
def test_unsupported_inline_type_is_refused_in_generate(target: Target, mime_type: str, data: bytes) -> None:
    part = types.Part.from_bytes(data=data, mime_type=mime_type)
    with pytest.raises(errors.ClientError) as info:
        target.client.models.generate_content(model=MODEL, contents=["What is this?", part])
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.message == f"Unsupported MIME type: {mime_type}"


def test_bad_api_key_carries_error_info(target: Target) -> None:
    bad = _client_with_key(target, "AIzaSyContractTestNotAValidKey0000000000")
    with pytest.raises(errors.ClientError) as info:
        list(bad.files.list())
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.message == "API key not valid. Please pass a valid API key."
    details = info.value.details["error"]["details"]
    error_info = next(d for d in details if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
    assert error_info["reason"] == "API_KEY_INVALID"
    assert error_info["domain"] == "googleapis.com"
    assert error_info["metadata"] == {"service": "generativelanguage.googleapis.com"}


def test_expiration_is_a_fraction_of_a_second_short_of_48_hours(target: Target) -> None:
    file = target.upload(b"timestamps\n", "text/plain")
    assert file.create_time is not None
    assert file.expiration_time is not None
    lifetime = file.expiration_time - file.create_time
    assert timedelta(hours=48) - timedelta(seconds=1) < lifetime < timedelta(hours=48)
    with target.http() as http:
        raw = http.get(
            f"{target.base_url}/v1beta/{file.name}", headers={"x-goog-api-key": target.api_key}
        ).json()
    for key in ("createTime", "updateTime", "expirationTime"):
        assert _FRACTION.match(raw[key]), (key, raw[key])


def test_upload_as_the_seed_docs_do_with_a_guessed_type(target: Target, tmp_path) -> None:
    path = tmp_path / "tool.py"
    path.write_text("def main():\n    return 42\n")
    file = target.client.files.upload(file=path)  # the SDK guesses text/x-python, as in the seed notebook
    target.track(file)
    assert file.mime_type == "text/x-python"
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="Unknown mime type"):  # the SDK alone cannot guess JSON Lines
        target.client.files.upload(file=jsonl)
