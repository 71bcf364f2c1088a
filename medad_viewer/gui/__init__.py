"""Qt widgets and the background worker. The only package that imports Qt widgets."""

from ._compat import guard_none_refcount

guard_none_refcount()
