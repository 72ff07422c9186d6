"""An item's content as the catalog holds it, read the one way every stage reads it.

* :func:`item_text`: the text an item is encoded from (title and categories), used by the ME feature job,
  the new-item path and text-encoder fine-tuning.
* :func:`open_catalog_image`: every catalog image the platform opens (ingest validation, the
  ``item_multimodal`` job, image fine-tuning, the new-item path) is opened through it: the path is resolved
  (symlinks followed) and must lie inside the catalog root, and the pixel count is checked against
  :data:`MAX_IMAGE_PIXELS` from the header before any pixel is decoded. One function, because a path checked
  at ingest and reopened later unchecked would follow a symlink swapped in the meantime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse


def item_text(title: str | None, categories: Iterable[str] | None) -> str:
    """The text an item is encoded from: ``"<title>. Genres: <c1>, <c2>"`` (the single definition)."""
    cats = [str(c) for c in (categories if categories is not None else []) if c is not None]
    return f"{title if title is not None else ''}. Genres: {', '.join(cats)}"


#: Pillow's decompression-bomb guard, tightened: images above this many pixels are refused (about 8k x 8k).
MAX_IMAGE_PIXELS = 64_000_000
#: URI schemes accepted for a catalog image: local paths (no scheme) and ``file://`` URIs.
IMAGE_SCHEMES = ("", "file")


class ImageLoadError(OSError):
    """An image file could not be opened or decoded. The message names the path."""


class ImageRefusedError(ImageLoadError):
    """A catalog image is refused before decoding: ``reason`` is one of the fixed strings of
    :func:`resolve_catalog_image` / :func:`open_catalog_image` (the ingest counts them per category).
    The message names the path and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"image {path!r} refused: {reason}")
        self.path, self.reason = str(path), reason


def too_large_reason() -> str:
    """The refusal reason of an image over :data:`MAX_IMAGE_PIXELS` pixels."""
    return f"image too large (> {MAX_IMAGE_PIXELS:,} px)"


def resolve_catalog_image(uri: str | Path, root: Path | str | None) -> Path:
    """The real path of catalog image ``uri`` (a local path or ``file://`` URI; relative paths are taken
    relative to ``root``), symlinks resolved.

    Args:
        uri: the ``items.image_uri`` value.
        root: the catalog root (``Settings.data_dir``) the image must lie in after resolution; ``None``
            = no containment check (only for callers that hold no catalog, e.g. tests of the encoder itself).

    Raises:
        ImageRefusedError: in this order: ``"image URI scheme not supported"`` (e.g. ``http``: never
            fetched), ``"image path escapes the catalog root"`` (``../``, an absolute path elsewhere, or a
            symlink pointing out), ``"image file missing"`` (or a folder), ``"image file empty"``.
    """
    uri = str(uri)
    scheme = urlparse(uri).scheme.lower()
    if len(scheme) > 1 and scheme not in IMAGE_SCHEMES:  # (one letter: a Windows drive, not a scheme)
        raise ImageRefusedError(uri, "image URI scheme not supported")
    p = Path(uri_to_path(uri))
    if root is not None:
        root = Path(root).resolve()
        if not p.is_absolute():
            p = root / p
    real = p.resolve()
    if root is not None and not real.is_relative_to(root):
        raise ImageRefusedError(uri, "image path escapes the catalog root")
    if not real.is_file():
        raise ImageRefusedError(uri, "image file missing")
    if real.stat().st_size == 0:
        raise ImageRefusedError(uri, "image file empty")
    return real


@contextlib.contextmanager
def open_catalog_image(uri: str | Path, root: Path | str | None) -> Iterator:
    """Open catalog image ``uri`` with PIL after :func:`resolve_catalog_image` (the *resolved* path is
    opened, so a symlink swapped after the check is not followed) and the pixel-count check.

    Yields:
        the open ``PIL.Image.Image`` (header read, pixels not decoded yet; closed on exit).

    Raises:
        ImageRefusedError: see :func:`resolve_catalog_image`, or :func:`too_large_reason` (more than
            :data:`MAX_IMAGE_PIXELS` pixels in the header, or Pillow's own ``DecompressionBombError``).
        Exception: whatever PIL raises for a file it cannot identify (``UnidentifiedImageError``, ...).
    """
    from PIL import Image

    real = resolve_catalog_image(uri, root)
    try:
        im = Image.open(real)
    except Image.DecompressionBombError as e:
        raise ImageRefusedError(str(uri), too_large_reason()) from e
    with im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise ImageRefusedError(str(uri), too_large_reason())
        yield im


def uri_to_path(uri: str) -> str:
    """``file:///a/b.jpg`` -> ``/a/b.jpg``; a plain local path is returned unchanged."""
    if uri.startswith("file:"):
        return unquote(urlparse(uri).path)
    return uri
