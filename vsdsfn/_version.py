"""The package's version, in a module of its own: every module may import it (the package
itself imports its modules lazily, so they cannot import it back)."""

__version__ = "1.5.0"
