"""Images that come with a request: what a pipeline accepts from whom, decoded under byte and pixel limits.

A pipeline has two kinds of callers. Its own user (a script, a notebook) may give an image as a PIL image, as
bytes, as a file path, and, only when they ask for it with `allow_image_urls=True`, as an http(s) URL. A remote
caller (the Inference Endpoints `handler.py`, the Space) may send an image only inline: base64, a data URL
(`data:image/png;base64,...`) or uploaded bytes. Paths and URLs from a remote caller are refused before anything
touches the disk or the network, with one message that echoes nothing back, so a caller learns nothing about the
server's files.

Every image is bounded: inline data by its size in bytes before it is decoded from base64, and every image by its
pixel count, read from its header before a pixel is decompressed (`image_processing_unimp.load_rgb_image`): a remote
caller's image over the limit is refused, the pipeline's own user's (a 12-48 MP phone photo) is downscaled to it. A URL
is fetched only over http(s), after resolving its host and checking every address it resolves to: loopback,
private, link-local, reserved, multicast and unspecified addresses are never contacted, the connection goes to the
checked address (no second lookup), redirects are checked the same way, and the body is read up to `max_bytes`.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import os
import socket
import ssl
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from PIL import Image

from .image_processing_unimp import MAX_IMAGE_PIXELS, ImageTooLargeError, load_rgb_image

MAX_IMAGE_BYTES = 8 * 1024 * 1024
"""The most bytes an image given inline (or fetched) may have: 8 MiB."""
URL_TIMEOUT = 10.0
MAX_REDIRECTS = 3
URL_SCHEMES = ("http://", "https://")
DATA_URL_PREFIX = "data:"

INLINE_ONLY = (
    "send the image inline, as base64 or a data URL (`data:image/png;base64,...`); file paths and URLs are not "
    "accepted here"
)


def enable_decompression_bomb_guard(max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Turn PIL's decompression-bomb guard on for this process, at `max_pixels` at most, and make it raise.

    For a process that serves remote callers (the handler, the Space): any PIL decode in it, the server
    framework's included, then refuses an image of more than `max_pixels` pixels instead of only warning.
    """
    if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def _refused(item_id: str, why: str) -> ValueError:
    return ValueError(f"Item {item_id!r}: field `image` {why}.")


def _address_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a URL may not be fetched from `address` (e.g. "loopback"), or None for a global unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-global"


def public_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to; a `ValueError` if it resolves to none or to any non-public one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(f"the host {host!r} of the image URL does not resolve ({error})") from error
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        kind = _address_kind(ipaddress.ip_address(address.split("%")[0]))
        if kind is not None:
            raise ValueError(f"the image URL's host {host!r} is {address}, a {kind} address, which is never fetched")
    if not addresses:
        raise ValueError(f"the host {host!r} of the image URL does not resolve")
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand (the name is not looked up again)."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to an address checked beforehand; the certificate is verified for the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_url(url: str, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = URL_TIMEOUT) -> bytes:
    """The body of an http(s) URL on a public address, at most `max_bytes`; redirects are checked like the URL."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an image URL must be an http:// or https:// URL with a host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = public_addresses(parts.hostname, port)[0]
        connection_class = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(parts.hostname, port, address, timeout)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", target, headers={"Accept": "image/*", "User-Agent": "unimp-pipeline"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ValueError(f"the image URL answered HTTP {response.status} {response.reason}")
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ImageTooLargeError(
                    f"the image URL's body is {int(length):,} bytes, over the limit of {max_bytes:,} bytes"
                )
            body = response.read(max_bytes + 1)
        except (OSError, http.client.HTTPException) as error:
            raise ValueError(f"the image URL could not be fetched ({error})") from error
        finally:
            connection.close()
        if len(body) > max_bytes:
            raise ImageTooLargeError(f"the image URL's body is over the limit of {max_bytes:,} bytes")
        return body
    raise ValueError(f"the image URL redirected more than {MAX_REDIRECTS} times")


def decode_base64(text: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of base64 `text` (whitespace ignored); a `ValueError` if it is not base64 or is too large."""
    text = "".join(text.split())
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ImageTooLargeError(f"is about {len(text) // 4 * 3:,} bytes, over the limit of {max_bytes:,} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("is not valid base64") from error


def decode_data_url(url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a `data:image/...;base64,...` URL."""
    header, comma, payload = url.partition(",")
    if not comma or not header.lower().startswith("data:image/") or not header.lower().endswith(";base64"):
        raise ValueError("is a data URL, but not `data:image/<type>;base64,<data>`")
    return decode_base64(payload, max_bytes)


@dataclass(frozen=True)
class ImagePolicy:
    """Which image forms a pipeline accepts, and the limits every image is decoded under.

    `allow_paths`: the pipeline's own user (on) or remote callers (off). On, file paths (and `{"path": ...}`
    dicts) are opened and an image over `max_pixels` is downscaled to it; off, paths are refused and so is an image
    over `max_pixels`, from its header. `allow_urls`: http(s) URLs are fetched, never from a non-public address;
    off unless asked for.
    """

    allow_paths: bool = True
    allow_urls: bool = False
    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    timeout: float = URL_TIMEOUT

    def read(self, value: Any, item_id: str) -> Image.Image:
        """The RGB image that `value` stands for, or a `ValueError` naming the item and what to send instead."""
        if isinstance(value, Image.Image):
            return load_rgb_image(value, item_id, self.max_pixels, self.allow_paths)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._decode(bytes(value), item_id)
        if isinstance(value, dict) and value.get("bytes"):
            return self._decode(bytes(value["bytes"]), item_id)
        if isinstance(value, dict) and value.get("path") and self.allow_paths:
            return load_rgb_image(value["path"], item_id, self.max_pixels, self.allow_paths)
        if isinstance(value, (str, os.PathLike)):
            return self._read_text(os.fspath(value), item_id)
        if not self.allow_paths:
            raise _refused(item_id, f"is not an image sent inline; {INLINE_ONLY}")
        raise _refused(
            item_id,
            'must be a PIL image, bytes, a `{"bytes", "path"}` dict, a file path or a data URL, '
            f"got {type(value).__name__}",
        )

    def _read_text(self, text: str, item_id: str) -> Image.Image:
        if text[:5].lower() == DATA_URL_PREFIX:
            try:
                data = decode_data_url(text, self.max_bytes)
            except ValueError as error:
                raise _refused(item_id, str(error)) from error
            return self._decode(data, item_id)
        if text[:8].lower().startswith(URL_SCHEMES):
            if not self.allow_paths:
                raise _refused(item_id, f"is a URL; {INLINE_ONLY}")
            if not self.allow_urls:
                raise _refused(
                    item_id,
                    "is a URL; pass `allow_image_urls=True` to the pipeline to fetch image URLs "
                    "(never from a loopback, private or link-local address)",
                )
            try:
                body = fetch_url(text, self.max_bytes, self.timeout)
            except ValueError as error:
                raise _refused(item_id, f"was not fetched: {error}") from error
            return self._decode(body, item_id)
        if self.allow_paths:
            return load_rgb_image(text, item_id, self.max_pixels, self.allow_paths)
        try:  # a remote caller's string is base64; whatever else it is, nothing is opened and nothing is echoed
            data = decode_base64(text, self.max_bytes)
        except ImageTooLargeError as error:
            raise _refused(item_id, str(error)) from error
        except ValueError as error:
            raise _refused(item_id, f"is not an image sent inline; {INLINE_ONLY}") from error
        return self._decode(data, item_id)

    def _decode(self, data: bytes, item_id: str) -> Image.Image:
        if len(data) > self.max_bytes:
            raise ImageTooLargeError(
                f"Item {item_id!r}: field `image` is {len(data):,} bytes, over the limit of {self.max_bytes:,} bytes."
            )
        if not data:
            raise _refused(item_id, "is empty")
        return load_rgb_image({"bytes": data, "path": None}, item_id, self.max_pixels, self.allow_paths)


__all__ = [
    "MAX_IMAGE_BYTES",
    "ImagePolicy",
    "decode_base64",
    "decode_data_url",
    "enable_decompression_bomb_guard",
    "fetch_url",
    "public_addresses",
]
