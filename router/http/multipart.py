"""One form field of a multipart body (audio transcriptions name their model
in a form field), read with a streaming parser.

The body is already in memory (it is forwarded to the child unchanged), so
the parser walks it chunk by chunk, keeps only the field asked
for, and stops as soon as that field ends: the file parts are never copied.
Large bodies are parsed in a worker thread so that one upload never holds
the event loop. python_multipart is imported by the first body parsed (only
audio transcriptions send one), not by every router at start-up.
"""

from __future__ import annotations

import asyncio

CHUNK = 256 * 1024
MAX_VALUE = 4096  # a model name is short; a longer field value is cut here
THREAD_ABOVE = 1024 * 1024  # bodies larger than this are parsed off the event loop


class MultipartError(ValueError):
    """The body is not the multipart body its Content-Type announces."""


class _FieldFinder:
    def __init__(self, wanted: str):
        self.wanted = wanted.encode()
        self.header_field = b""
        self.header_value = b""
        self.in_wanted = False
        self.value = bytearray()
        self.found = False
        self.parts = 0

    def on_part_begin(self) -> None:
        self.parts += 1
        self.in_wanted = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        from python_multipart.multipart import parse_options_header

        if self.header_field.strip().lower() == b"content-disposition":
            _, params = parse_options_header(self.header_value)
            self.in_wanted = params.get(b"name") == self.wanted
        self.header_field, self.header_value = b"", b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_wanted and len(self.value) < MAX_VALUE:
            self.value += data[start:min(end, start + MAX_VALUE - len(self.value))]

    def on_part_end(self) -> None:
        if self.in_wanted:
            self.found = True
            self.in_wanted = False


def _boundary(content_type: str) -> bytes:
    from python_multipart.multipart import parse_options_header

    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not ctype.startswith(b"multipart/") or not boundary:
        raise MultipartError("no multipart boundary in Content-Type")
    if len(boundary) > 70:  # RFC 2046 5.1.1
        raise MultipartError("multipart boundary longer than 70 characters")
    return boundary


def _find(content_type: str, body: bytes, name: str) -> str | None:
    from python_multipart import MultipartParser
    from python_multipart.exceptions import MultipartParseError

    finder = _FieldFinder(name)
    parser = MultipartParser(_boundary(content_type), {
        "on_part_begin": finder.on_part_begin, "on_header_field": finder.on_header_field,
        "on_header_value": finder.on_header_value, "on_header_end": finder.on_header_end,
        "on_part_data": finder.on_part_data, "on_part_end": finder.on_part_end,
    })
    try:
        for offset in range(0, len(body), CHUNK):
            parser.write(body[offset:offset + CHUNK])  # one bounded chunk at a time, never the whole body
            if finder.found:
                break
        else:
            parser.finalize()
    except MultipartParseError as e:
        raise MultipartError(str(e) or type(e).__name__) from None
    if not finder.found:
        if not finder.parts:
            raise MultipartError("no part found (wrong boundary?)")
        return None
    return bytes(finder.value).decode("utf-8", "replace").strip()


async def form_field(content_type: str, body: bytes, name: str) -> str | None:
    """The text of form field `name` (at most MAX_VALUE bytes), or None when the
    body has no such field; MultipartError when the body is malformed."""
    if len(body) > THREAD_ABOVE:
        return await asyncio.to_thread(_find, content_type, body, name)
    return _find(content_type, body, name)
