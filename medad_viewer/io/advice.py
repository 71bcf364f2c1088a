"""What to do about a file that could not be loaded: one sentence per kind of problem, shown after the message
(the messages themselves say which file and what is wrong, and stay stable for scripts and tests)."""

from __future__ import annotations

# (words in the message, advice); the first match wins.
_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("no such file",), "Check the path: the file or folder may have been moved, renamed or unmounted."),
    (("not enough memory",), "Close other programs and open it again, or open one series of the study at a time."),
    (("too large",), "Open a cropped or downsampled copy; the limit keeps this computer from running out of memory."),
    (("the file is empty",), "It holds no data: copy it again from where it came from (PACS, CD, scanner export)."),
    (("truncated", "damaged", "could not be decoded", "could not be parsed", "differs from", "none of its"),
     "Copy it again from where it came from (PACS, CD, scanner export); the rest of the study is not affected."),
    (("not a supported", "not dicom", "holds no image", "colour or vector", "-d image"),
     "Export it from its source as DICOM, NIfTI, NRRD, MetaImage, PNG, JPEG or TIFF."),
    (("holds no images", "no images found"), "Choose the folder that holds the DICOM or image files themselves."),
    (("could not be opened", "could not be read (", "permission"),
     "Check that you may read it (its permissions) and that its disk or network share is still connected."),
    (("unexpected error",), "The other files were loaded. Please report this message to the MedAD Viewer team."),
)


def advice_for(message: str) -> str:
    low = message.lower()
    for words, advice in _RULES:
        if any(w in low for w in words):
            return advice
    return ""
