"""digitrec: handwritten digit recognition, from MNIST training to reading real people's digits."""

__version__ = "0.1.0"
