"""Qt widgets and the background worker. The only package that imports Qt widgets."""
