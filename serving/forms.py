"""Request bodies that are HTML forms: ``multipart/form-data`` and ``application/x-www-form-urlencoded``.

These are the forms BentoML's clients send to ``/predict``: ``files`` as file parts of a
multipart body (with ``images`` as a JSON text field beside them, ``null`` when not given),
and ``images`` alone, JSON-encoded, as a form-encoded field. Both are parsed strictly (any
malformation is a 400 that says what) into the same ``Part`` list, and one rule reads the
fields of either (``form_to_batch``): ``files`` are PNG/JPEG uploads, ``images`` a JSON list
of arrays, never both, and no other field. A ``files`` field that is text (a URL, say) is
refused: the service fetches nothing on a client's behalf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from urllib.parse import parse_qsl

import numpy as np

from serving.validation import (
    MAX_BATCH,
    MAX_IMAGE_PIXELS,
    InvalidImages,
    ScaleCheck,
    arrays_to_batch,
    describe,
    files_to_batch,
    parse_json,
)

MAX_FILENAME = 1024
MAX_PART_HEADERS = 16 * 1024
MAX_FORM_FIELDS = 1024  # a form-encoded body has one or two fields; thousands are an attack on the parser
FIELDS = ("images", "files")
EITHER = "send either 'images' (a JSON list of arrays) or 'files' (PNG/JPEG uploads), not both or neither"


@dataclass(frozen=True)
class Part:
    """One field of a form: its name, the client's file name (None for a text field) and its bytes."""

    field: str
    filename: str | None
    content: bytes


# --- multipart/form-data ---------------------------------------------------------------------------


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


# --- application/x-www-form-urlencoded -------------------------------------------------------------


def parse_urlencoded(body: bytes) -> list[Part]:
    """The fields of a form-encoded body (``name=value&...``, percent-encoded UTF-8), strictly."""
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError as error:
        raise InvalidImages(
            f"malformed form-encoded body: it is not percent-encoded UTF-8 ({error.reason})", code="malformed_form"
        ) from None
    except ValueError as error:  # a field without "=", too many fields
        reason = str(error) if len(str(error)) <= 200 else str(error)[:200] + "..."
        raise InvalidImages(f"malformed form-encoded body: {reason}", code="malformed_form") from None
    return [Part(name, None, value.encode()) for name, value in pairs]


# --- the fields of either form -----------------------------------------------------------------------


def form_to_batch(
    parts: Sequence[Part],
    input_shape: Sequence[int],
    max_batch: int = MAX_BATCH,
    max_pixels: int = MAX_IMAGE_PIXELS,
    scale: ScaleCheck | None = None,
) -> np.ndarray:
    """The model's batch from a form's fields: PNG/JPEG uploads in ``files``, or arrays in a JSON ``images``
    field (``null`` counts as absent, as BentoML's clients send it beside files); any other field is
    refused by name. ``scale`` as for ``arrays_to_batch``."""
    uploads, images = [], None
    for part in parts:
        if part.field not in FIELDS:
            what = f"file {describe(part.filename)} in field" if part.filename is not None else "field"
            raise InvalidImages(
                f"{what} {part.field!r} is not accepted; upload PNG/JPEG images as file fields named 'files'",
                code="unknown_field",
            )
        if part.field == "files":
            if part.filename is None:
                raise InvalidImages(
                    "field 'files' is a text field; upload PNG/JPEG images as files (with a filename), "
                    "or send arrays as JSON 'images'",
                    code="not_a_file",
                )
            uploads.append((part.filename, part.content))
            continue
        if part.filename is not None:
            raise InvalidImages(
                f"file {describe(part.filename)} in field 'images': 'images' is a text field holding a JSON list "
                "of arrays; upload PNG/JPEG images as file fields named 'files'",
                code="unknown_field",
            )
        if images is not None:
            raise InvalidImages("field 'images' is given twice; send it once, holding the whole JSON list")
        images = parse_json(part.content, "field 'images'")
    if images is not None and uploads:
        raise InvalidImages(EITHER)
    if images is not None:
        return arrays_to_batch(images, input_shape, max_batch, scale)
    if not uploads:
        raise InvalidImages("empty batch: send at least one image", code="empty_batch")
    return files_to_batch(uploads, input_shape, max_batch, max_pixels)


def multipart_to_batch(
    body: bytes,
    content_type: str,
    input_shape: Sequence[int],
    max_batch: int = MAX_BATCH,
    max_pixels: int = MAX_IMAGE_PIXELS,
    scale: ScaleCheck | None = None,
) -> np.ndarray:
    """A ``multipart/form-data`` body to the model's batch (``form_to_batch``)."""
    return form_to_batch(parse_multipart(body, content_type), input_shape, max_batch, max_pixels, scale)


def urlencoded_to_batch(
    body: bytes, input_shape: Sequence[int], max_batch: int = MAX_BATCH, scale: ScaleCheck | None = None
) -> np.ndarray:
    """An ``application/x-www-form-urlencoded`` body to the model's batch (``form_to_batch``); run in a worker
    process, as JSON is, when the body is large."""
    return form_to_batch(parse_urlencoded(body), input_shape, max_batch, scale=scale)
