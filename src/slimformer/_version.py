"""The package version (a module of its own, so low layers can read it without importing the public API)."""

__version__ = "0.1.0"
