"""The HTTP face of digitrec: a page to draw digits on and a JSON API under /api/v1 (`digitrec serve`)."""

from digitrec.serve.app import create_app

__all__ = ["create_app"]
