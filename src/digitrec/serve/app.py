"""FastAPI app over one Recognizer: the drawing page at `/`, the JSON API at `/api/v1`.

Every endpoint is a plain `def`: inference is CPU-bound torch code, which FastAPI runs in its thread pool
(the Recognizer is thread-safe for prediction), so one slow upload never blocks the event loop. Bad input
is a 4xx with a one-line `detail` that names the field or the uploaded file, never a traceback.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from digitrec import __version__
from digitrec.errors import ImageError
from digitrec.recognizer import Prediction, Recognizer

API = "/api/v1"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; larger is not a digit anyone drew
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a whole request, checked from its header before it is parsed
MAX_BATCH_FILES = 64  # one request's worth of work stays under a second or two on a laptop CPU


# ------------------------------------------------------------------------------------------ response types
class TopK(BaseModel):
    digit: int
    probability: float


class DigitResult(BaseModel):
    """One digit: `digit` is null when the image holds no ink (then `unsure` is true)."""

    digit: int | None = Field(description="the digit read, or null when no ink was found")
    confidence: float = Field(description="calibrated probability of `digit` (0 when no ink)")
    probabilities: list[float] = Field(description="calibrated probability of each digit 0-9")
    unsure: bool = Field(description="low confidence or no ink: ask the user again")
    box: list[int] | None = Field(description="the digit's ink box in the image, [x0, y0, x1, y1], end-exclusive")
    top_k: list[TopK] = Field(description="the most likely digits, best first")
    image: list[list[float]] | None = Field(
        default=None, description="the 28x28 MNIST-normalised input the model saw (with include_image=true)")


class BatchItem(BaseModel):
    file: str
    result: DigitResult | None
    error: str | None = Field(description="why this file could not be read; null when it was")


class BatchResult(BaseModel):
    results: list[BatchItem]


class NumberDigit(BaseModel):
    digit: int
    confidence: float
    box: list[int]


class NumberResult(BaseModel):
    """Several digits in a row, left to right; `text` is '' when the image holds no ink."""

    text: str
    confidence: float = Field(description="product of the digits' confidences")
    unsure: bool
    digits: list[NumberDigit]


class ModelInfo(BaseModel):
    name: str = Field(description="the model card's name ('distilled', 'best', 'ensemble' or a trained card's)")
    model: str = Field(description="architecture ('best', 'fast', 'mlp') or 'ensemble'")
    classes: list[str]
    test_accuracy: float | None = Field(description="MNIST test accuracy recorded in the model card")
    temperature: float
    unsure_below: float
    reads_numbers: bool = Field(description="whether a row reader is loaded for /read-number")
    version: str


class Health(BaseModel):
    status: str
    version: str


# ------------------------------------------------------------------------------------------------- helpers
def _read_upload(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refusing more than `limit` without reading past it."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"file {upload.filename!r}: upload too large (limit {limit / 2**20:g} MB)")
    return data


def _image_error(upload: UploadFile, exc: ImageError) -> str:
    """ImageError names a bytes source '<bytes>'; here the user knows it by its upload name."""
    message = str(exc)
    if message.startswith("<bytes>: "):
        message = message[len("<bytes>: "):]
    return f"file {upload.filename or 'upload'!r}: {message}"


def _digit_result(p: Prediction, top_k: int, include_image: bool) -> DigitResult:
    return DigitResult(
        digit=p.digit, confidence=round(p.confidence, 6),
        probabilities=[round(float(x), 6) for x in p.probabilities], unsure=p.unsure,
        box=[int(v) for v in p.box] if p.box else None,
        top_k=[TopK(digit=d, probability=round(q, 6)) for d, q in p.top_k(top_k)] if p.digit is not None else [],
        image=np.round(p.image.astype(np.float64), 4).tolist() if include_image else None,
    )


def _one_line(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one line: 'top_k: Input should be less than or equal to 10'."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# ----------------------------------------------------------------------------------------------------- app
def create_app(recognizer: Recognizer | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_request_bytes: int = MAX_REQUEST_BYTES) -> FastAPI:
    """The app over `recognizer` (default: `Recognizer.load()`, the bundled default model and reader).
    `max_upload_bytes` bounds each uploaded file, `max_request_bytes` a whole request."""
    rec = recognizer or Recognizer.load()
    app = FastAPI(title="digitrec", version=__version__,
                  description="Read handwritten digits from images: one digit, or a number written in a row.")
    static = resources.files("digitrec") / "serve" / "static"

    @app.exception_handler(RequestValidationError)
    def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(list(exc.errors()))}, status_code=422)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        # Refuse an oversized body from its header, before multipart parsing spools it to disk.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_request_bytes:
            return JSONResponse({"detail": f"request too large ({int(length)} bytes, limit "
                                           f"{max_request_bytes / 2**20:g} MB)"}, status_code=413)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get(f"{API}/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", version=__version__)

    @app.get(f"{API}/model", response_model=ModelInfo)
    def model_info() -> ModelInfo:
        card = rec.checkpoint.card
        accuracy = card.get("metrics", {}).get("test_accuracy")
        return ModelInfo(name=Path(rec.name).stem, model=str(card.get("model") or "ensemble"),
                         classes=list(rec.classes), test_accuracy=accuracy, temperature=rec.temperature,
                         unsure_below=rec.unsure_below, reads_numbers=rec.reader is not None, version=__version__)

    @app.post(f"{API}/predict", response_model=DigitResult,
              responses={400: {"description": "not a readable image"}, 413: {"description": "too large"}})
    def predict(file: Annotated[UploadFile, File(description="an image of one digit: PNG, JPEG, GIF, BMP, "
                                                             "TIFF or WebP")],
                top_k: Annotated[int, Query(ge=1, le=10)] = 3,
                include_image: bool = False) -> DigitResult:
        """Read the one digit in an uploaded image."""
        data = _read_upload(file, max_upload_bytes)
        try:
            prediction = rec.predict(data)
        except ImageError as exc:
            raise HTTPException(400, _image_error(file, exc)) from None
        return _digit_result(prediction, top_k, include_image)

    @app.post(f"{API}/predict-batch", response_model=BatchResult,
              responses={413: {"description": "too large"}})
    def predict_batch(files: Annotated[list[UploadFile], File(description=f"up to {MAX_BATCH_FILES} images")],
                      top_k: Annotated[int, Query(ge=1, le=10)] = 3) -> BatchResult:
        """Read many images in one batched forward pass; a bad file gets its own `error`, the rest are read."""
        if len(files) > MAX_BATCH_FILES:
            raise HTTPException(413, f"files: {len(files)} uploads, at most {MAX_BATCH_FILES} per request")
        datas = [_read_upload(f, max_upload_bytes) for f in files]
        results = rec.predict_many(datas, errors="return")
        items = []
        for upload, result in zip(files, results, strict=True):
            name = upload.filename or "upload"
            if isinstance(result, ImageError):
                items.append(BatchItem(file=name, result=None, error=_image_error(upload, result)))
            elif isinstance(result, Prediction):
                items.append(BatchItem(file=name, result=_digit_result(result, top_k, False), error=None))
            else:  # another DigitrecError: still this file's, still one line
                items.append(BatchItem(file=name, result=None, error=f"file {name!r}: {result}"))
        return BatchResult(results=items)

    @app.post(f"{API}/read-number", response_model=NumberResult,
              responses={400: {"description": "not a readable image"}, 413: {"description": "too large"}})
    def read_number(file: Annotated[UploadFile, File(description="an image of several digits in a row")]
                    ) -> NumberResult:
        """Read a number written in a row (a year, a phone number, a meter reading)."""
        data = _read_upload(file, max_upload_bytes)
        try:
            reading = rec.read_number(data)
        except ImageError as exc:
            raise HTTPException(400, _image_error(file, exc)) from None
        return NumberResult(text=reading.text, confidence=round(reading.confidence, 6), unsure=reading.unsure,
                            digits=[NumberDigit(digit=int(d.digit), confidence=round(d.confidence, 6),
                                                box=[int(v) for v in d.box or ()])
                                    for d in reading.digits if d.digit is not None])

    return app
