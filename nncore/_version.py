"""The version, in one place (the package and its file format read it)."""
__version__ = "0.1.0"
