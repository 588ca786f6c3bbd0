"""``gemini-files-emulator``: run the emulator in the foreground until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Sequence

from airflow_gemini_files.emulator.control import GeminiEmulator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-files-emulator",
        description="A local Gemini Developer API (Files API, generateContent, Batch API) for offline tests. "
        "Controls: GET /_emulator/stats, POST /_emulator/reset, /_emulator/clock, /_emulator/faults, "
        "/_emulator/fail_processing, GET|POST /_emulator/config, GET /_emulator/files, "
        "GET /_emulator/batches, GET|POST /_emulator/batches/config, "
        "POST /_emulator/batches/{hold,release,fail,expire}.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this API key (default: accept any key)")
    parser.add_argument("--data-dir", default=None, help="where uploaded bytes go (default: a temp dir)")
    parser.add_argument("--processing-delay", type=float, default=0.0, help="seconds PROCESSING -> ACTIVE")
    parser.add_argument("--video-processing-delay", type=float, default=None, help="default: 3x the above")
    parser.add_argument("--model-latency", type=float, default=0.0, help="seconds per generateContent")
    parser.add_argument("--max-file-bytes", type=int, default=2 * 1024**3)
    parser.add_argument("--max-project-bytes", type=int, default=20 * 1024**3)
    parser.add_argument("--gcs-host", default=None, help="GCS emulator URL (default: $STORAGE_EMULATOR_HOST)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests (never their headers)")
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
