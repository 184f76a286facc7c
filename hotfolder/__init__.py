"""hotfolder: drop scenario files into a folder, get ComfyUI renders and a JSON record out of another."""

__version__ = "0.1.0"

__all__ = ["__version__"]
