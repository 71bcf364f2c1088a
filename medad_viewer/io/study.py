"""`load_study`: open a file or folder (DICOM, NIfTI/NRRD/MetaImage, plain images) as a Study.

Folders are searched recursively (hidden files and folders skipped). Files with a DICOM-like
name (.dcm, .dicom, .dic, .ima) must be DICOM, else they are reported; files with other
unknown names are used when they hold DICOM and ignored otherwise, so a README or .DS_Store
beside the images is never an error. Bad input never raises: problems go into Study.errors
(or, for a damaged slice of a series that did load, into that Series.warnings).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from .cancel import CancelToken
from ._util import ProgressCallback, ReadFailure, natural_key
from .fill import SliceFill
from .dicom import DICOM_EXTENSIONS, has_dicom_magic, load_dicom_files, probe_is_dicom
from .images import IMAGE_SUFFIXES, load_image_files
from .series import LoadError, Series, Study
from .volumes import load_volume_series, volume_suffix

__all__ = ["LoadError", "Series", "Study", "load_study", "SUPPORTED_FORMATS"]

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = "DICOM, NIfTI, NRRD, MetaImage (.mha/.mhd), PNG, JPEG, TIFF or BMP"

# Never images, so never worth probing or reporting; raw data files of .mhd/.nhdr headers too.
_IGNORED_SUFFIXES = frozenset(
    """.txt .md .rst .json .xml .csv .tsv .html .htm .pdf .doc .docx .xls .xlsx .rtf .log .ini
    .cfg .yaml .yml .toml .py .sh .bat .exe .dll .so .dylib .zip .gz .tar .7z .rar .db .sqlite
    .lnk .url .inf .ico .js .css .raw .zraw .img .nfo .sha1 .md5 .pkl .pt .pth .npy .npz
    .mp4 .avi .mov .wav .mp3""".split()
)


def load_study(
    path: str | os.PathLike[str],
    *,
    modality: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    defer_pixels: bool = False,
) -> Study:
    """Load every image series found at `path` (a file or a folder).

    `modality` overrides the guessed modality of non-DICOM series (volumes, plain images);
    DICOM series keep their Modality tag. `progress(done, total)` is called as files are read
    (units of work, roughly two per DICOM file), from the calling thread.
    Never raises for bad input; raises TypeError for a path that is not str or PathLike. With a `cancel` token,
    raises io.cancel.Cancelled at the next file once it is set.

    `defer_pixels` (the viewer, to show a large series at once): DICOM series with a SeriesInstanceUID come back
    after their headers, their pixels not read yet; `Study.pending` (an io.fill.SliceFill) reads them (see
    io/fill.py). Everything else (and everything without it) is read before this returns.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_study expects a str or os.PathLike path, not {type(path).__name__}")
    source = os.path.abspath(os.fspath(path))
    if not os.path.exists(source):
        return Study([], [LoadError(source, f"{source}: no such file or folder")], source)
    loader = _Loader(modality, progress, cancel, defer_pixels)
    try:
        if os.path.isdir(source):
            loader.load_folder(source)
        else:
            loader.load_file(source)
    except Exception as exc:  # noqa: BLE001 - the promise is: bad input never raises
        log.exception("unexpected error loading %s", source)
        loader.errors.append(
            LoadError(source, f"{os.path.basename(source) or source}: unexpected error while loading "
                              f"({type(exc).__name__}: {exc})")
        )
    _pixel_uids(loader.series)  # never those still reading: a series without a UID of its own is read at once
    loader.series.sort(key=lambda s: (natural_key(s.source), _series_number(s), s.uid))
    if progress is not None:
        progress(loader.total, loader.total)
    pending = [s._pending for s in loader.series if s._pending is not None]
    return Study(loader.series, loader.errors, source, SliceFill(pending) if pending else None)


def _series_number(s: Series) -> int:
    value = s.metadata.get("SeriesNumber")
    return value if isinstance(value, int) else 0


def classify(path: str) -> str:
    """'volume', 'image', 'dicom' (named so), 'maybe-dicom' (unknown name) or 'ignore'."""
    name = os.path.basename(path)
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return "ignore"  # hidden files, macOS '._x.dcm' resource forks, the DICOMDIR index
    if volume_suffix(name):
        return "volume"
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_SUFFIXES:
        return "image"
    if ext in DICOM_EXTENSIONS:
        return "dicom"
    if ext in _IGNORED_SUFFIXES:
        return "ignore"
    return "maybe-dicom"


class _Loader:
    def __init__(self, modality: str | None, progress: ProgressCallback | None,
                 cancel: CancelToken | None = None, defer: bool = False) -> None:
        self.modality = modality.strip().upper() if modality and modality.strip() else None
        self.defer = defer
        self.progress = progress
        self.cancel = cancel
        self.series: list[Series] = []
        self.errors: list[LoadError] = []
        self.done = 0
        self.total = 0

    def tick(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    # -- one file ------------------------------------------------------------------------------

    def load_file(self, path: str) -> None:
        kind = classify(path)
        name = os.path.basename(path)
        if kind == "maybe-dicom" and (has_dicom_magic(path) or probe_is_dicom(path)):
            kind = "dicom"
        if kind == "volume":
            self.total = 1
            self._load_volume(path)
        elif kind == "image":
            self.total = 1
            self._absorb(load_image_files([path], modality=self.modality, tick=self.tick))
        elif kind == "dicom":
            self.total = 2
            before = len(self.errors)
            self._absorb(load_dicom_files([(path, True)], tick=self.tick))
            if not self.series and len(self.errors) == before:
                self.errors.append(LoadError(path, f"{name}: this DICOM file holds no image "
                                                   "(it is a report, presentation state or similar)"))
        else:
            self.errors.append(LoadError(path, f"{name}: not a supported image file "
                                               f"(supported: {SUPPORTED_FORMATS})"))

    # -- a folder ------------------------------------------------------------------------------

    def load_folder(self, folder: str) -> None:
        dicom: list[tuple[str, bool]] = []
        volumes: list[str] = []
        images: dict[str, list[str]] = defaultdict(list)

        def on_walk_error(exc: OSError) -> None:
            where = exc.filename or folder
            self.errors.append(LoadError(where, f"{where}: folder could not be opened ({exc.strerror or exc})"))

        for root, dirs, files in os.walk(folder, onerror=on_walk_error):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=natural_key)
            for name in sorted(files, key=natural_key):
                path = os.path.join(root, name)
                if not os.path.isfile(path):
                    continue
                kind = classify(path)
                if kind == "volume":
                    volumes.append(path)
                elif kind == "image":
                    images[root].append(path)
                elif kind == "dicom":
                    dicom.append((path, True))
                elif kind == "maybe-dicom" and (has_dicom_magic(path) or probe_is_dicom(path)):
                    dicom.append((path, False))

        self.total = 2 * len(dicom) + len(volumes) + sum(len(v) for v in images.values())
        if dicom:
            self._guarded(folder, lambda: load_dicom_files(dicom, tick=self.tick, defer=self.defer))
        for path in volumes:
            self._load_volume(path)
        for root, paths in images.items():
            self._guarded(root, lambda: load_image_files(paths, folder=root, modality=self.modality, tick=self.tick))
        if not self.series and not self.errors:
            self.errors.append(
                LoadError(folder, f"{folder}: the folder holds no images that can be opened "
                                  f"(looked for {SUPPORTED_FORMATS})")
            )

    # -- helpers -------------------------------------------------------------------------------

    def _load_volume(self, path: str) -> None:
        try:
            self.series.append(load_volume_series(path, self.modality))
        except ReadFailure as exc:
            self.errors.append(LoadError(path, str(exc)))
        except MemoryError:
            self.errors.append(LoadError(path, f"{os.path.basename(path)}: not enough memory to open this volume"))
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop the others loading
            log.exception("unexpected error loading %s", path)
            self.errors.append(LoadError(path, f"{os.path.basename(path)}: unexpected error while loading "
                                               f"({type(exc).__name__}: {exc})"))
        self.tick()

    def _guarded(self, where: str, load: Callable[[], tuple[list[Series], list[LoadError]]]) -> None:
        # One kind of file failing unexpectedly must not lose what the others loaded.
        try:
            self._absorb(load())
        except Exception as exc:  # noqa: BLE001
            log.exception("unexpected error loading files in %s", where)
            self.errors.append(LoadError(where, f"{where}: unexpected error while loading "
                                                f"({type(exc).__name__}: {exc})"))

    def _absorb(self, result: tuple[list[Series], list[LoadError]]) -> None:
        series, errors = result
        self.series.extend(series)
        self.errors.extend(errors)


def pixel_digest(volume: np.ndarray) -> str:
    """A digest of a stored pixel array (shape, type and every value), slice by slice so no copy is made."""
    h = hashlib.sha1(f"{volume.shape}|{volume.dtype.str}".encode())
    for k in range(volume.shape[0]):
        h.update(np.ascontiguousarray(volume[k]).data)
    return h.hexdigest()[:32]


def _pixel_uids(series: list[Series]) -> None:
    """Series whose uid was made from their path get one made from their pixels; the path one becomes an alias."""
    seen: dict[str, int] = {}
    for s in series:
        kind, _, rest = s.uid.partition(":")
        if kind not in ("file", "dicom") or not rest:
            continue
        part = rest.partition("#")[2]
        uid = f"{kind}:{pixel_digest(s.volume())}" + (f"#{part}" if part else "")
        n = seen.get(uid, 0) + 1
        seen[uid] = n
        if n > 1:  # the same pixels twice in one study (a copied file): each series keeps a uid of its own
            uid += f"#copy{n}"
        s.aliases = (s.uid, *s.aliases)
        s.uid = uid
