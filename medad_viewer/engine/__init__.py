"""Anomaly engine: backbones, adapters, prompts, memory bank, synthesis, adaptation, scoring, metrics. No Qt."""
