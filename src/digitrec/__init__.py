"""digitrec: handwritten digit recognition, from MNIST training to reading real people's digits."""

__version__ = "0.1.0"
__all__ = ["Recognizer", "Prediction", "NumberReading", "__version__"]


def __getattr__(name: str):
    # Lazy: `import digitrec` stays cheap (no torch import) until the API is actually used.
    if name in ("Recognizer", "Prediction", "NumberReading"):
        from digitrec import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'digitrec' has no attribute {name!r}")
