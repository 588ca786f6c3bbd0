"""``gemini-files-emulator``: run the emulator in the foreground until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence

from airflow_gemini_files.emulator.control import REGISTER_AUTH_MODES, REGISTER_IDENTITIES, GeminiEmulator


def _seconds_or_realistic(value: str) -> float | None:
    return None if value == "realistic" else float(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-files-emulator",
        description="A local Gemini Developer API (Files API, generateContent, countTokens, models, Batch "
        "API) for offline tests. Controls (they need the API key when --api-key is set): GET "
        "/_emulator/stats, POST /_emulator/reset, /_emulator/clock, /_emulator/faults, "
        "/_emulator/fail_processing, GET|POST /_emulator/config, GET /_emulator/files, GET "
        "/_emulator/batches, GET|POST /_emulator/batches/config, POST /_emulator/batches/{hold,release,fail,"
        "expire}.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this API key (default: accept any key)")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="scratch space for uploaded bytes (default: a temp dir); the emulator works in its own "
        "gemini-files-emulator/ subdirectory, cleans it on start and stop; files do not survive a restart",
    )
    parser.add_argument(
        "--processing-delay",
        type=_seconds_or_realistic,
        default=None,
        help="seconds PROCESSING -> ACTIVE for every file, 0 for instant ACTIVE (default: 'realistic', "
        "per-media delays like the real service: video and large audio/PDF stay PROCESSING for a while)",
    )
    parser.add_argument("--video-processing-delay", type=float, default=None, help="default: 3x the above")
    parser.add_argument("--model-latency", type=float, default=0.0, help="seconds per generateContent")
    parser.add_argument("--max-file-bytes", type=int, default=2 * 1024**3)
    parser.add_argument("--max-project-bytes", type=int, default=20 * 1024**3)
    parser.add_argument("--max-inline-bytes", type=int, default=100 * 1024**2, help="inline data per request")
    parser.add_argument("--max-inline-pdf-bytes", type=int, default=50 * 1024**2, help="per inline PDF")
    parser.add_argument(
        "--register-auth",
        choices=REGISTER_AUTH_MODES,
        default="key_and_bearer",
        help="what files:register accepts: API key plus OAuth token (the seed notebook), the key only, or "
        "an OAuth token only; the others get the real service's refusals",
    )
    parser.add_argument(
        "--register-identity",
        choices=REGISTER_IDENTITIES,
        default="user",
        help="whose OAuth token a registration carries (decides the refusal in key_only mode)",
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="serve this model (repeat for several); default: the current Gemini models",
    )
    parser.add_argument(
        "--socket-timeout", type=float, default=60.0, help="seconds a silent connection lives"
    )
    parser.add_argument("--max-large-bodies", type=int, default=2, help="JSON bodies over 1 MiB read at once")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="also answer requests for this Host name (needed with --host 0.0.0.0; repeatable)",
    )
    parser.add_argument("--gcs-host", default=None, help="GCS emulator URL (default: $STORAGE_EMULATOR_HOST)")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log requests (never headers, keys or upload session ids)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    emulator = GeminiEmulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        data_dir=args.data_dir,
        processing_delay=args.processing_delay,
        video_processing_delay=args.video_processing_delay,
        model_latency=args.model_latency,
        max_file_bytes=args.max_file_bytes,
        max_project_bytes=args.max_project_bytes,
        gcs_host=args.gcs_host,
        max_inline_bytes=args.max_inline_bytes,
        max_inline_pdf_bytes=args.max_inline_pdf_bytes,
        register_auth=args.register_auth,
        register_identity=args.register_identity,
        models=args.models,
        socket_timeout=args.socket_timeout,
        max_large_bodies=args.max_large_bodies,
        allowed_hosts=args.allow_host,
    )
    with emulator:
        print(emulator.base_url, flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
