"""The strict ``multipart/form-data`` parser of upload bodies, and the fields ``/predict`` accepts in them.

Any malformation is a 400 that says what; the only field accepted is ``files``, holding
PNG/JPEG uploads (a text field named ``files``, a URL say, is refused: the service fetches
nothing on a client's behalf).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message

import numpy as np

from serving.validation import MAX_BATCH, MAX_IMAGE_PIXELS, InvalidImages, describe, files_to_batch

MAX_FILENAME = 1024
MAX_PART_HEADERS = 16 * 1024


@dataclass(frozen=True)
class Part:
    field: str
    filename: str | None
    content: bytes


def _header_params(value: str, header: str = "content-disposition") -> Message:
    message = Message()
    message[header] = value
    return message


def malformed(what: str) -> InvalidImages:
    return InvalidImages(f"malformed multipart body: {what}", code="malformed_multipart")


def boundary_of(content_type: str) -> str:
    boundary = _header_params(content_type, "content-type").get_param("boundary", header="content-type")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise InvalidImages("multipart/form-data without a boundary parameter", code="malformed_multipart")
    return boundary


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/form-data body, strictly: any malformation is a 400 that says what."""
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    segments = (b"\r\n" + body).split(b"\r\n" + delimiter)
    if len(segments) < 2:
        raise malformed("the boundary never occurs")
    parts, closed = [], False
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            closed = True
            break
        if not segment.startswith(b"\r\n"):
            raise malformed("a boundary is not followed by CRLF")
        end = segment.find(b"\r\n\r\n", 2, MAX_PART_HEADERS)
        if end < 0:
            if segment[2:4] == b"\r\n":  # a part without headers
                end = 0
            else:
                raise malformed(f"a part's headers are missing or longer than {MAX_PART_HEADERS} bytes")
        headers = {}
        for line in segment[2:end].decode("utf-8", "replace").split("\r\n") if end else []:
            key, sep, value = line.partition(":")
            if not sep:
                raise malformed(f"bad part header {line[:80]!r}")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition")
        if not disposition:
            raise malformed("a part has no Content-Disposition")
        params = _header_params(disposition)
        field, filename = params.get_param("name", header="content-disposition"), params.get_filename()
        if not isinstance(field, str):
            raise malformed("a part has no field name")
        if filename is not None and len(filename) > MAX_FILENAME:
            raise InvalidImages(
                f"file {describe(filename)}: a file name may have at most {MAX_FILENAME} characters, "
                f"this one has {len(filename)}",
                code="filename_too_long",
            )
        parts.append(Part(field, filename, segment[end + 4 :] if end else segment[4:]))
    if not closed:
        raise malformed("the closing boundary is missing")
    return parts


def uploads_of(parts: Sequence[Part]) -> list[tuple[str, bytes]]:
    """(client's file name, bytes) of every ``files`` upload; any other field is refused by name."""
    uploads = []
    for part in parts:
        if part.field != "files":
            what = f"file {describe(part.filename)} in field" if part.filename is not None else "field"
            raise InvalidImages(
                f"{what} {part.field!r} is not accepted; upload PNG/JPEG images as file fields named 'files'",
                code="unknown_field",
            )
        if part.filename is None:
            raise InvalidImages(
                "field 'files' is a text field; upload PNG/JPEG images as files (with a filename), "
                "or send arrays as JSON 'images'",
                code="not_a_file",
            )
        uploads.append((part.filename, part.content))
    return uploads


def multipart_to_batch(
    body: bytes,
    content_type: str,
    input_shape: Sequence[int],
    max_batch: int = MAX_BATCH,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    uploads = uploads_of(parse_multipart(body, content_type))
    if not uploads:
        raise InvalidImages("empty batch: send at least one image", code="empty_batch")
    return files_to_batch(uploads, input_shape, max_batch, max_pixels)
