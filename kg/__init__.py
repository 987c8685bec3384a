"""motor-kg knowledge toolkit: general knowledge (GK) graph, specific knowledge (SK) store and lookup.

Importing ``kg`` is light: heavy libraries (torch, FAISS, DuckDB, PyKEEN) load in the modules
that need them.
"""
from kg.errors import InputError, KGError, MissingResourceError

__all__ = ["KGError", "InputError", "MissingResourceError"]
