#!/usr/bin/env python3
"""Writes a minimal single-font PDF with a text layer from a plain-text file.
Used to make the PDF documents of corpora/ without any PDF library.

    python3 scripts/make_pdf.py INPUT.txt OUTPUT.pdf
"""
import sys


def escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pages_of(lines, per_page=46):
    for i in range(0, len(lines), per_page):
        yield lines[i : i + per_page]


def main(src: str, dst: str) -> None:
    lines = open(src, encoding="utf-8").read().splitlines()
    objects = []  # (number, bytes)
    pages = list(pages_of(lines)) or [[]]
    n_pages = len(pages)
    # 1 catalog, 2 pages, 3 font, then (page, content) pairs.
    kids = [4 + 2 * i for i in range(n_pages)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(("<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join(f"{k} 0 R" for k in kids), n_pages)).encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, page in enumerate(pages):
        content_no = 5 + 2 * i
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {content_no} 0 R >>".encode()
        )
        text = ["BT", "/F1 11 Tf", "14 TL", "56 740 Td"]
        for line in page:
            text.append(f"({escape(line)}) Tj T*")
        text.append("ET")
        stream = "\n".join(text).encode("cp1252")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    write_pdf(objects, dst)


def write_pdf(objects, dst: str) -> None:
    """Writes numbered objects (1 is the catalog) with their xref table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    open(dst, "wb").write(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
