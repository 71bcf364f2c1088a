"""The engine's defaults that the viewer needs too, in a module that imports nothing heavy (no torch), so the window
can show them without loading the engine. Chosen by measurement: see benchmarks/compare_methods.py and the README."""

DEFAULT_BACKBONE = "efficientnet-lite2"
DEFAULT_METHOD = "memory"
ADAPT_MAX_STEPS = 300
# A safety cap, not a schedule: adaptation runs its steps (or stops when validation stops improving) and the cap only
# ends a run that would otherwise take far longer than expected; results say when it did (`stopped_because`).
ADAPT_TIME_CAP_S = 300.0
# How the image kinds (`engine.preprocess.image_kind`) are named to the user.
KIND_WORDS = {"section": "cross-sections (slice mirror on)", "radiograph": "radiographs (no mirror, mean over the body)"}
