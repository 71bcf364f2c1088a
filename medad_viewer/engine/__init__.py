"""Anomaly engine, pure torch/numpy (no Qt).

`detector` orchestrates one slice's path and calls down into one module per stage, in this order:
`preprocess` (1 prepare; `foreground` for the masks) -> `model` (2 features from `backbones`, 3 their `adapters`,
and heads with `prompts`; trained by `adapt` on `synthesis`) -> `memory_bank` and `maps` (4 map) -> `image_score`
(5 image score) -> `calibration` (6 percentile of normal). Around it: `score` (whole series), `evaluate` and
`metrics` (benchmarks), `jobs` (progress and cancel), `defaults`.
"""
