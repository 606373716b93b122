"""The decoded-pixel budget: an upload's size in pixels read from its header before anything is decoded,
refused above the per-request limit (413), admitted only while the server's budget for images being
screened at once has room (else 503), so a small compressed file that inflates to a huge image (a
"zip bomb" PNG) cannot exhaust the memory of the clinic PC. The budget is taken by the worker when
it starts decoding (an upload waiting in the queue holds only its compressed bytes), and a worker
waits for room rather than failing the request. A page request costs about 30 bytes per
pixel at its peak (decoded image, display copies, overlays, report), the API about 22."""

from __future__ import annotations

import io
import threading
import warnings

MAX_REQUEST_MPX = 30.0    # one image: a 2x oversized 15 Mpx panoramic still fits
SERVER_BUDGET_MPX = 45.0  # all images being screened at once: ~1.4 GB at the page's peak


def image_pixels(data: bytes, kind: str) -> int | None:
    """Width x height (x frames for DICOM) from the file's header, without decoding the pixels; None when
    the header cannot be read (the decoder then gives the reason)."""
    try:
        if kind == "dicom":
            import pydicom

            from osteopano.web.upload import as_part10

            ds = pydicom.dcmread(io.BytesIO(as_part10(data)), stop_before_pixels=True, force=True)
            return int(ds.Rows) * int(ds.Columns) * max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(io.BytesIO(data)) as im:
                    return int(im.size[0]) * int(im.size[1])
            except Image.DecompressionBombError:
                return 2**62   # far above any limit: refused as too large
    except Exception:  # noqa: BLE001 - any header problem is the decoder's to report
        return None


class PixelBudget:
    """Megapixels of images being decoded and screened at once, thread-safe."""

    def __init__(self, total_pixels: int):
        self.total, self.used = int(total_pixels), 0
        self._room = threading.Condition()

    def reserve(self, pixels: int, timeout: float = 0.0) -> bool:
        """Take ``pixels`` of the budget, waiting up to ``timeout`` seconds for room; False when none came."""
        with self._room:
            if not self._room.wait_for(lambda: self.used + pixels <= self.total, timeout=timeout):
                return False
            self.used += pixels
            return True

    def release(self, pixels: int) -> None:
        with self._room:
            self.used -= pixels
            self._room.notify_all()
