"""Make the sample documents the demo and the example DAGs analyse.

Every file is produced from code with the standard library only (no PDF, image or audio library),
so anyone can see what is inside and regenerate them byte for byte::

    uv run python -m airflow_gemini_files.samples.make_samples

The outputs are committed beside this script as package data.
"""

from __future__ import annotations

import math
import struct
import wave
import zlib
from collections.abc import Callable
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent

INVOICE_LINES = [
    "INVOICE INV-2026-1122",
    "Northwind Office Supplies Ltd, 12 Harbour Street, Bristol BS1 4QA",
    "Bill to: Contoso Analytics GmbH, Invalidenstrasse 5, 10115 Berlin",
    "Date: 2026-11-20    Due: 2026-12-20",
    "",
    "Item                              Qty    Unit (EUR)    Total (EUR)",
    "Ergonomic office chair              4        289.00        1156.00",
    "Standing desk, 160 x 80 cm          2        549.00        1098.00",
    "USB-C docking station               6        119.00         714.00",
    "",
    "Subtotal                                                   2968.00",
    "VAT 19%                                                     563.92",
    "Total due                                                  3531.92",
    "",
    "Payment: IBAN DE00 0000 0000 0000 0000 00, reference INV-2026-1122.",
]

MEETING_NOTES_DE = """\
# Protokoll: Projektbesprechung Lagerumzug

**Datum:** 19. November 2026
**Teilnehmende:** Anna Keller (Leitung), Jonas Brandt (Logistik), Mehmet Yilmaz (IT)

## Beschlüsse

1. Der Umzug des Lagers von Hamburg-Billbrook nach Norderstedt beginnt am 12. Januar 2027.
2. Die Inventur wird am 8. Januar abgeschlossen; Jonas Brandt verantwortet die Zählung.
3. Das neue Lagerverwaltungssystem geht erst nach dem Umzug live (geplant: 1. Februar 2027).

## Offene Punkte

- Angebot der Spedition Nordfracht liegt bei 18.400 EUR; ein zweites Angebot wird eingeholt.
- Netzwerkverkabelung in Halle 2 ist noch nicht abgenommen (Mehmet Yilmaz klärt bis 30. November).

## Nächster Termin

3. Dezember 2026, 10:00 Uhr, Besprechungsraum Elbe.
"""

ORDERS_CSV_HEADER = ["order_id", "order_date", "customer", "country", "product", "quantity", "unit_price_eur"]
ORDERS_CSV_ROWS = [
    ["SO-10231", "2026-11-18", "Contoso Analytics GmbH", "DE", "Standing desk", "2", "549.00"],
    ["SO-10232", "2026-11-18", "Fabrikam Retail SA", "FR", "Office chair", "10", "289.00"],
    ["SO-10233", "2026-11-19", "Tailspin Toys Ltd", "GB", "Docking station", "25", "119.00"],
    ["SO-10234", "2026-11-19", "Wide World Importers BV", "NL", "Monitor arm", "12", "79.50"],
    ["SO-10235", "2026-11-20", "Contoso Analytics GmbH", "DE", "Docking station", "6", "119.00"],
    ["SO-10236", "2026-11-20", "Adventure Works SL", "ES", "Office chair", "4", "289.00"],
    ["SO-10237", "2026-11-21", "Fabrikam Retail SA", "FR", "Standing desk", "8", "549.00"],
]

# Quarterly revenue in thousand EUR, drawn as bar charts: Q4 differs from Q3 in the last two bars.
REVENUE_Q3 = [42, 55, 61, 48]
REVENUE_Q4 = [42, 55, 73, 66]
BAR_COLOURS = [(66, 133, 244), (52, 168, 83), (251, 188, 4), (234, 67, 53)]


def pdf_bytes(lines: list[str]) -> bytes:
    """A one-page PDF 1.4 with the lines in Helvetica: objects, a correct xref table and trailer."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    ops = ["BT", "/F1 11 Tf", "13 TL", "56 780 Td"]
    for i, line in enumerate(lines):
        font = "/F1 16 Tf" if i == 0 else "/F1 10 Tf"
        ops += [font, f"({escape(line)}) Tj", "T*"]
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Title (Invoice INV-2026-1122) /Producer (airflow-gemini-files make_samples) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode() + b"0000000000 65535 f \n"
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\n".encode()
    out += f"startxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


def png_bytes(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """An 8-bit RGB PNG (no interlace) built from chunks with their CRCs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type: none
        for x in range(width):
            raw += bytes(pixel(x, y))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + (chunk(b"IEND", b""))
    )


def bar_chart(values: list[int], width: int = 160, height: int = 100) -> bytes:
    """A bar chart PNG: one coloured bar per value on a white background with a grey baseline."""
    bar_width = width // (2 * len(values) + 1)
    top = max(values)

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        if y >= height - 4:
            return (120, 120, 120)
        slot, inside = divmod(x, bar_width)
        if slot % 2 == 1 and slot // 2 < len(values):
            index = slot // 2
            bar_height = round(values[index] / top * (height - 14))
            if y >= height - 4 - bar_height and inside < bar_width:
                return BAR_COLOURS[index % len(BAR_COLOURS)]
        return (255, 255, 255)

    return png_bytes(width, height, pixel)


def write_wav(path: Path, seconds: float = 1.5, rate: int = 8000) -> None:
    """A mono 16-bit WAV: a two-tone chime (440 Hz then 660 Hz) with a short fade in and out."""
    frames = bytearray()
    total = int(seconds * rate)
    for i in range(total):
        t = i / rate
        freq = 440.0 if t < seconds / 2 else 660.0
        fade = min(1.0, i / (0.05 * rate), (total - i) / (0.05 * rate))
        frames += struct.pack("<h", int(12000 * fade * math.sin(2 * math.pi * freq * t)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))


def csv_text() -> str:
    """Orders as CSV (comma separated, header row, LF line ends)."""
    rows = [ORDERS_CSV_HEADER, *ORDERS_CSV_ROWS]
    return "".join(",".join(f'"{v}"' if "," in v else v for v in row) + "\n" for row in rows)


def make_samples(target: Path = SAMPLES_DIR) -> list[Path]:
    """Write every sample into ``target`` and return their paths."""
    target.mkdir(parents=True, exist_ok=True)
    written = {
        "invoice_northwind_2026-11.pdf": pdf_bytes(INVOICE_LINES),
        "revenue_chart_q3.png": bar_chart(REVENUE_Q3),
        "revenue_chart_q4.png": bar_chart(REVENUE_Q4),
        "meeting_notes_de.md": MEETING_NOTES_DE.encode("utf-8"),
        "orders_2026-11.csv": csv_text().encode("utf-8"),
    }
    paths = []
    for name, data in written.items():
        path = target / name
        path.write_bytes(data)
        paths.append(path)
    audio = target / "support_call_chime.wav"
    write_wav(audio)
    paths.append(audio)
    return sorted(paths)


if __name__ == "__main__":
    for made in make_samples():
        print(f"{made.name:34} {made.stat().st_size:>7} bytes")
