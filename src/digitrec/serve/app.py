"""FastAPI app over one Recognizer: the drawing page at `/`, the JSON API at `/api/v1`.

Inference is CPU-bound torch and numpy code: it runs in worker threads (the Recognizer is thread-safe for
prediction), a few at a time, so one slow image never blocks the event loop and a burst of large photos
cannot take all the memory. Bad input is a 4xx with a one-line `detail` that names the field or the
uploaded file, never a traceback; an unexpected failure is a JSON 500 and a logged traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digitrec import __version__
from digitrec.checkpoint import model_name
from digitrec.errors import DigitrecError
from digitrec.recognizer import Prediction, Recognizer

T = TypeVar("T")
log = logging.getLogger("digitrec.serve")

API = "/api/v1"
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; larger is not a digit anyone drew
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a whole request: from its header, and counted as it streams in
MAX_BATCH_FILES = 64  # one request's worth of work stays under a second or two on a laptop CPU
# A request body that stops arriving for this long is answered 408: a client trickling its upload (or gone
# silent) would otherwise hold a connection, and a worker waiting on it, for good.
BODY_IDLE_SECONDS = 30.0
# Images decoded at once: a 40 MP photo costs ~300 MB while it is normalised, so the rest wait their turn
# (answers stay as fast: the CPU is the limit either way).
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
_NAME_SHOWN = 80  # characters of an uploaded file's name repeated in an error


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
    several_digits: bool = Field(description="the image looks like several digits (then unsure too): read it "
                                             "with /read-number")
    box: list[int] | None = Field(description="the digit's ink box in the image, [x0, y0, x1, y1], end-exclusive")
    top_k: list[TopK] = Field(description="the most likely digits, best first")
    image: list[list[float]] | None = Field(
        description="the 28x28 MNIST-normalised input the model saw (with include_image=true), else null")


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
    ink_left_out: bool = Field(description="digit-sized ink off the row was not read (digits stacked in a "
                                           "column, a second row): then unsure too")
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


class ErrorDetail(BaseModel):
    """Every 4xx and 5xx answer: one line naming the field or the uploaded file."""

    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail, "description": "not a readable image, or a malformed multipart body"},
    408: {"model": ErrorDetail, "description": "the request body stopped arriving"},
    413: {"model": ErrorDetail, "description": "a file or the request is too large"},
    422: {"model": ErrorDetail, "description": "a missing or malformed field"},
}


class _TooLarge(HTTPException):
    """Raised from inside the body stream: FastAPI passes an HTTPException through its body parsing (any
    other exception there becomes a 400), so the client gets this 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"request too large (over {limit / 2**20:g} MB)", headers={"Connection": "close"})


class _Stalled(HTTPException):
    """Raised from inside the body stream, as `_TooLarge` is, when no more of the body comes."""

    def __init__(self, seconds: float):
        super().__init__(408, f"request body stalled (nothing received for {seconds:g} s)",
                         headers={"Connection": "close"})


class BodyLimit:
    """Pure ASGI middleware: refuse a request over `limit` bytes from its Content-Length header, and count
    the bytes of a chunked one as they arrive, so no client can make the server spool more than `limit`;
    a body that stops arriving for `idle` seconds is a 408."""

    def __init__(self, app: ASGIApp, limit: int, idle: float = BODY_IDLE_SECONDS):
        self.app, self.limit, self.idle = app, limit, idle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(send, f"request too large ({int(length)} bytes, limit {self.limit / 2**20:g} MB)")
            return
        seen = 0
        started = False
        body_done = False

        async def counted() -> Message:
            nonlocal seen, body_done
            if body_done:  # afterwards the app only listens for a disconnect, which may rightly take long
                return await receive()
            try:
                with anyio.fail_after(self.idle):
                    message = await receive()
            except TimeoutError:
                raise _Stalled(self.idle) from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except (_TooLarge, _Stalled) as exc:  # raised where no handler turned it into an answer
            if not started:
                await self._refuse(send, str(exc.detail), exc.status_code)

    @staticmethod
    async def _refuse(send: Send, detail: str, status: int = 413) -> None:
        body = ErrorDetail(detail=detail).model_dump_json().encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------------- helpers
def _shown(upload: UploadFile) -> str:
    """The upload's name as errors repeat it: quoted, and cut short if a client sent a very long one."""
    name = upload.filename or "upload"
    return repr(name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN] + "...")


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refusing more than `limit` without reading past it."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"file {_shown(upload)}: upload too large (limit {limit / 2**20:g} MB)")
    return data


def _image_error(upload: UploadFile, exc: DigitrecError) -> str:
    """Errors name a bytes source '<bytes>'; here the user knows it by its upload name."""
    message = str(exc)
    if message.startswith("<bytes>: "):
        message = message[len("<bytes>: "):]
    return f"file {_shown(upload)}: {message}"


async def _single_file(request: Request, field: str) -> None:
    """Refuse two files under a field that takes one (FastAPI would keep the last and drop the rest)."""
    count = len((await request.form()).getlist(field))
    if count > 1:
        raise HTTPException(422, f"{field}: one file expected, got {count}")


def _digit_result(p: Prediction, top_k: int, include_image: bool) -> DigitResult:
    return DigitResult(
        digit=p.digit, confidence=round(p.confidence, 6),
        probabilities=[round(float(x), 6) for x in p.probabilities], unsure=p.unsure,
        several_digits=p.several_digits,
        box=[int(v) for v in p.box] if p.box else None,
        top_k=[TopK(digit=d, probability=round(q, 6)) for d, q in p.top_k(top_k)] if p.digit is not None else [],
        image=np.round(p.image.astype(np.float64), 4).tolist() if include_image else None,
    )


def _only_query(*known: str) -> Callable[[Request], None]:
    """A dependency refusing query parameters the endpoint does not take: `?topk=5` would otherwise be
    ignored without a word, and the user would get the default."""
    def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - set(known))
        if unknown:
            takes = f"it takes {', '.join(known)}" if known else "it takes none"
            raise HTTPException(422, f"{unknown[0]}: unknown query parameter for {request.url.path} ({takes})")
    return check


def _one_line(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one line: 'top_k: Input should be less than or equal to 10'."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        msg = str(err.get("msg", "invalid"))
        if "Expected UploadFile" in msg:  # a text field where a file belongs (curl -F file=text, not file=@path)
            msg = "expected an uploaded file (multipart/form-data with a filename), got a text field"
        elif err.get("type") == "missing" and loc and loc[0] in ("file", "files"):
            # also what a multipart body cut off before its file part ends looks like to the parser
            msg = "no uploaded file (send it as multipart/form-data, complete with its closing boundary)"
        parts.append(f"{'.'.join(loc) or 'request'}: {msg}")
    return "; ".join(parts) or "invalid request"


# ----------------------------------------------------------------------------------------------------- app
def create_app(recognizer: Recognizer | None = None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_request_bytes: int | None = None, workers: int = DEFAULT_WORKERS,
               body_idle_seconds: float = BODY_IDLE_SECONDS) -> FastAPI:
    """The app over `recognizer` (default: `Recognizer.load()`, the bundled default model and reader).
    `max_upload_bytes` bounds each uploaded file, `max_request_bytes` a whole request (default: 64 MB, or
    one file and 1 MB more when a file may be larger); `workers` images are read at once, the rest queue;
    a body that stops arriving for `body_idle_seconds` is a 408."""
    rec = recognizer or Recognizer.load()
    limit = max_request_bytes or max(MAX_REQUEST_BYTES, max_upload_bytes + 2**20)
    slots = anyio.CapacityLimiter(workers)
    # /docs and /redoc would load Swagger UI and ReDoc from a CDN: the schema is served instead, offline.
    app = FastAPI(title="digitrec", version=__version__, docs_url=None, redoc_url=None,
                  description="Read handwritten digits from images: one digit, or a number written in a row.")
    app.add_middleware(BodyLimit, limit=limit, idle=body_idle_seconds)
    static = resources.files("digitrec") / "serve" / "static"

    async def run(fn: Callable[..., T], *args: Any) -> T:
        """CPU-bound work in a worker thread, at most `workers` at a time."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=slots)

    async def read_one(request: Request, upload: UploadFile, fn: Callable[[bytes], T]) -> T:
        """`fn` over the one file uploaded as `file`; an unreadable image is a 400 naming it."""
        await _single_file(request, "file")
        data = await _read_upload(upload, max_upload_bytes)
        try:
            return await run(fn, data)
        except DigitrecError as exc:
            raise HTTPException(400, _image_error(upload, exc)) from None

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(list(exc.errors()))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and not detail.startswith("file"):  # the multipart parser's own words
            detail = f"request body: {detail}"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("digitrec: unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get(f"{API}/health", response_model=Health)
    @app.head(f"{API}/health", include_in_schema=False)  # for uptime monitors and link checkers
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    @app.get(f"{API}/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        card = rec.checkpoint.card
        accuracy = card.get("metrics", {}).get("test_accuracy")
        reader = await run(lambda: rec.reader)
        return ModelInfo(name=model_name(rec.checkpoint), model=str(card.get("model") or "ensemble"),
                         classes=list(rec.classes), test_accuracy=accuracy, temperature=rec.temperature,
                         unsure_below=rec.unsure_below, reads_numbers=reader is not None, version=__version__)

    @app.post(f"{API}/predict", response_model=DigitResult, responses=_ERRORS,
              dependencies=[Depends(_only_query("top_k", "include_image"))])
    async def predict(request: Request,
                      file: Annotated[UploadFile, File(description="an image of one digit: PNG, JPEG, GIF, BMP, "
                                                                   "TIFF or WebP")],
                      top_k: Annotated[int, Query(ge=1, le=10)] = 3,
                      include_image: bool = False) -> DigitResult:
        """Read the one digit in an uploaded image."""
        return _digit_result(await read_one(request, file, rec.predict), top_k, include_image)

    @app.post(f"{API}/predict-batch", response_model=BatchResult, responses=_ERRORS,
              dependencies=[Depends(_only_query("top_k"))])
    async def predict_batch(files: Annotated[list[UploadFile], File(description=f"up to {MAX_BATCH_FILES} images")],
                            top_k: Annotated[int, Query(ge=1, le=10)] = 3) -> BatchResult:
        """Read many images in one batched forward pass; a bad file gets its own `error`, the rest are read."""
        if len(files) > MAX_BATCH_FILES:
            raise HTTPException(422, f"files: {len(files)} uploads, at most {MAX_BATCH_FILES} per request")
        datas: list[bytes | HTTPException] = []
        for upload in files:
            try:
                datas.append(await _read_upload(upload, max_upload_bytes))
            except HTTPException as exc:  # one file too large: its own error, the others still read
                datas.append(exc)
        readable = [d for d in datas if isinstance(d, bytes)]
        results = iter(await run(lambda: rec.predict_many(readable, errors="return")))
        items = []
        for upload, data in zip(files, datas, strict=True):
            result = next(results) if isinstance(data, bytes) else data
            name = upload.filename or "upload"
            if isinstance(result, Prediction):
                items.append(BatchItem(file=name, result=_digit_result(result, top_k, False), error=None))
            elif isinstance(result, HTTPException):
                items.append(BatchItem(file=name, result=None, error=str(result.detail)))
            else:  # a DigitrecError: this file's, one line
                items.append(BatchItem(file=name, result=None, error=_image_error(upload, result)))
        return BatchResult(results=items)

    @app.post(f"{API}/read-number", response_model=NumberResult, responses=_ERRORS,
              dependencies=[Depends(_only_query())])
    async def read_number(request: Request,
                          file: Annotated[UploadFile, File(description="an image of several digits in a row")]
                          ) -> NumberResult:
        """Read a number written in a row (a year, a phone number, a meter reading)."""
        reading = await read_one(request, file, rec.read_number)
        return NumberResult(text=reading.text, confidence=round(reading.confidence, 6), unsure=reading.unsure,
                            ink_left_out=reading.ink_left_out,
                            digits=[NumberDigit(digit=int(d.digit), confidence=round(d.confidence, 6),
                                                box=[int(v) for v in d.box or ()])
                                    for d in reading.digits if d.digit is not None])

    return app
