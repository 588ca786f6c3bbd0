"""The real google-genai SDK (sync and aio) through upload, get, list, delete against the emulator.

Emulator only: the assertions read the emulator's request counters and rely on an empty project.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pytest
from google import genai
from google.genai import errors

from airflow_gemini_files.emulator import GeminiEmulator

from .conftest import make_client

pytestmark = pytest.mark.emulator_only


def _sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()  # as the live API


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_upload_get_list_delete_roundtrip(
    gemini_emulator: GeminiEmulator, tmp_path: Path, api_version: str
) -> None:
    client = make_client(gemini_emulator, api_version=api_version)
    path = tmp_path / "notes.txt"
    data = b"first line\nsecond line\n" * 100
    path.write_bytes(data)

    uploaded = client.files.upload(file=path, config={"display_name": "My notes"})

    assert uploaded.name is not None
    assert uploaded.name.startswith("files/")
    assert uploaded.display_name == "My notes"
    assert uploaded.mime_type == "text/plain"
    assert uploaded.size_bytes == len(data)
    assert uploaded.sha256_hash == _sha(data)
    assert uploaded.state is not None
    assert uploaded.state.name == "ACTIVE"
    assert uploaded.source is not None
    assert uploaded.source.name == "UPLOADED"
    assert uploaded.create_time
    assert uploaded.expiration_time
    assert (uploaded.expiration_time - uploaded.create_time).total_seconds() == pytest.approx(48 * 3600)

    fetched = client.files.get(name=uploaded.name)
    assert fetched == uploaded

    assert [f.name for f in client.files.list()] == [uploaded.name]

    client.files.delete(name=uploaded.name)
    with pytest.raises(errors.ClientError) as info:
        client.files.get(name=uploaded.name)
    assert info.value.code == 403
    assert info.value.status == "PERMISSION_DENIED"
    assert list(client.files.list()) == []
    stats = gemini_emulator.stats()
    assert stats["requests"]["upload_start"] == 1
    assert stats["requests"]["upload_chunk"] == 1
    assert stats["requests"]["delete"] == 1
    assert stats["files"] == 0


def test_multi_chunk_stream_upload_keeps_bytes_and_hash(
    client: genai.Client, gemini_emulator: GeminiEmulator
) -> None:
    data = bytes(range(256)) * (9 * 1024 * 1024 // 256 * 2 + 3)  # > two 8 MiB chunks, not aligned
    uploaded = client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "text/plain", "name": "files/big-blob-1"}
    )
    assert uploaded.name == "files/big-blob-1"
    assert uploaded.size_bytes == len(data)
    assert uploaded.sha256_hash == _sha(data)
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == 3
    assert gemini_emulator.stats()["bytes"] == len(data)


def test_empty_file_upload(client: genai.Client) -> None:
    uploaded = client.files.upload(file=io.BytesIO(b""), config={"mime_type": "text/plain"})
    assert uploaded.size_bytes in (0, None)
    assert uploaded.sha256_hash == _sha(b"")


def test_delete_missing_file_is_permission_denied(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.files.delete(name="files/does-not-exist")
    assert (info.value.code, info.value.status) == (403, "PERMISSION_DENIED")


async def _async_roundtrip(client: genai.Client, path: Path) -> list[str]:
    aio = client.aio
    uploaded = await aio.files.upload(file=path, config={"display_name": "async one"})
    assert uploaded.name is not None
    got = await aio.files.get(name=uploaded.name)
    assert got.display_name == "async one"
    names = [f.name async for f in await aio.files.list()]
    response = await aio.models.generate_content(model="gemini-2.5-flash", contents=["What is it?", uploaded])
    assert response.text is not None
    assert "async one" in response.text
    data = b"0123456789abcdef" * (1024 * 1024 + 7)  # 16 MiB + 112 bytes: three chunks
    big = await aio.files.upload(file=io.BytesIO(data), config={"mime_type": "text/plain"})
    assert big.size_bytes == len(data)
    assert big.sha256_hash == _sha(data)
    await aio.files.delete(name=uploaded.name)
    with pytest.raises(errors.ClientError) as info:
        await aio.files.get(name=uploaded.name)
    assert info.value.code == 403
    return [n for n in names if n]


def test_async_client_roundtrip(
    client: genai.Client, gemini_emulator: GeminiEmulator, tmp_path: Path
) -> None:
    import asyncio

    path = tmp_path / "a.md"
    path.write_text("# Title\nbody words here\n")
    names = asyncio.run(_async_roundtrip(client, path))
    assert len(names) == 1
    assert gemini_emulator.stats()["requests"]["upload_chunk"] == 1 + 3


async def _async_errors(emu: GeminiEmulator, client: genai.Client) -> None:
    # Keep the client referenced while its call runs: with aiohttp installed (the Google provider brings
    # it), google-genai 2.x closes the shared session when a Client is garbage-collected.
    wrong_key = make_client(emu, api_key="wrong")
    with pytest.raises(errors.ClientError) as info:
        await wrong_key.aio.files.get(name="files/abc")
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    emu.configure(processing_delay=30)
    file = await client.aio.files.upload(file=io.BytesIO(b"abc"), config={"mime_type": "text/plain"})
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents=["x", file])
    assert info.value.status == "FAILED_PRECONDITION"
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model="claude-3", contents="x")
    assert info.value.code == 404
    emu.inject_faults("delete", sequence=[503])
    with pytest.raises(errors.ServerError) as server_info:
        await client.aio.files.delete(name=file.name or "")
    assert server_info.value.code == 503
    await client.aio.files.delete(name=file.name or "")
    with pytest.raises(errors.ClientError) as info:
        await client.aio.files.delete(name=file.name or "")
    assert info.value.code == 403


def test_async_client_error_paths(client: genai.Client, gemini_emulator: GeminiEmulator) -> None:
    import asyncio

    asyncio.run(_async_errors(gemini_emulator, client))
