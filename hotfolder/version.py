"""hotfolder's version, in a module of its own so that low modules can name it without importing the
plugin API that ``hotfolder/__init__.py`` re-exports."""

__version__ = "0.1.0"
