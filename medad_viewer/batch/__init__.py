"""Scoring many studies on Dask distributed into a ranked worklist (issue 22): `worklist` (no Dask), `run`."""
