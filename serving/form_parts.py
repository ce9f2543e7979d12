"""List the parts of a buffered multipart/form-data body: name, filename, content type, size.

Headers only: part data is counted, never copied. The upload guard uses it to refuse, with a
4xx, forms that BentoML's own form handling would turn into a 500 or worse (a text value in a
file field is fetched as a URL; a file in a plain field is JSON-decoded as text).
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header


class MalformedForm(ValueError):
    """A body that does not parse as multipart/form-data."""


@dataclass
class FormPart:
    name: str
    filename: str | None  # None: a plain (text) field; starlette makes the others UploadFiles
    content_type: str | None
    size: int = 0


def multipart_boundary(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type header, or None.

    Raises:
        MalformedForm: a multipart/form-data type without a boundary.
    """
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        return None
    if not options.get(b"boundary"):
        raise MalformedForm("multipart/form-data without a boundary parameter")
    return options[b"boundary"]


def scan_parts(body: bytes, boundary: bytes) -> list[FormPart]:
    """The parts of ``body``, in order. Raises ``MalformedForm``."""
    parts: list[FormPart] = []
    headers: dict[bytes, bytes] = {}
    name: list[bytes] = []
    value: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.append(data[start:end])

    def on_header_end() -> None:
        headers[b"".join(name).lower()] = b"".join(value).strip(b" \t")
        name.clear()
        value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition"))
        if b"name" not in options:
            raise MalformedForm("a part has no Content-Disposition name")
        filename = options.get(b"filename")
        content_type = headers.get(b"content-type")
        parts.append(
            FormPart(
                name=options[b"name"].decode("latin-1"),
                filename=None if filename is None else filename.decode("latin-1"),
                content_type=None if content_type is None else content_type.decode("latin-1"),
            )
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].size += end - start

    callbacks = {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
    }  # fmt: skip
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise MalformedForm(f"malformed multipart/form-data body ({e})") from None
    if parser.state != MultipartState.END:  # cut short: starlette would take it as a shorter form
        raise MalformedForm("incomplete multipart/form-data body (no closing boundary)")
    return parts
