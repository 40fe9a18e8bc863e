"""The package version, in a module of its own so that library modules can read it without the
package's public verbs (``vlprompt/__init__.py``)."""

__version__ = "0.1.0"
