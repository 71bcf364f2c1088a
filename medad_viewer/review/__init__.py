"""Review state: reference sets, per-slice decisions, annotations, session persistence. No Qt."""
