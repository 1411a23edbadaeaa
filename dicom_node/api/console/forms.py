"""A multipart form read into memory within a bound: the rule tester's upload is never written to disk.

Starlette spools uploaded files larger than 1 MiB to a temporary file; the tester must not store a file it
was given, and must refuse a larger one before holding it. This feeds the body to ``python_multipart`` chunk
by chunk as it arrives, up to the bound (413 past it), keeping only the parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

_SLACK = 64 << 10  # the form's other fields and its boundaries


class FormRefused(Exception):
    """The form is too large or not multipart (``status_code`` and a message saying what to do)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class MemoryForm:
    """Text fields and files (name -> (filename, bytes)) of a multipart form."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)


async def read_multipart(request: Request, max_file_bytes: int) -> MemoryForm:
    """Read a ``multipart/form-data`` body of at most ``max_file_bytes`` plus its fields, in memory, parsing
    each chunk as it arrives (only the parts are kept, never the whole body)."""
    limit = max_file_bytes + _SLACK
    too_big = FormRefused(413, f"the upload is larger than {max_file_bytes >> 20} MiB: choose one DICOM file")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise FormRefused(415, "send the form as multipart/form-data (the page's upload form does)")
    form, parser = _parser(params[b"boundary"])
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_big
            parser.write(chunk)
        parser.finalize()
    except FormRefused:
        raise
    except Exception as exc:  # python_multipart raises its own error types
        raise FormRefused(400, f"the form could not be read: {exc}") from exc
    return form


def _parser(boundary: bytes) -> tuple[MemoryForm, MultipartParser]:
    """A parser that fills a :class:`MemoryForm` as data is written to it."""
    form = MemoryForm()
    headers: dict[bytes, bytes] = {}
    name_value: list[bytes] = [b"", b""]
    data = bytearray()

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        name_value[0] += buf[start:end]

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        name_value[1] += buf[start:end]

    def on_header_end() -> None:
        headers[name_value[0].lower()] = name_value[1]
        name_value[0], name_value[1] = b"", b""

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.extend(buf[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition:
            form.files[name] = (disposition[b"filename"].decode("utf-8", "replace"), bytes(data))
        else:
            form.fields[name] = data.decode("utf-8", "replace")

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    return form, MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
