"""`seq2seq serve`: a trained run's model behind an HTTP API and a page, loaded and compiled once.

    POST /translate   {"text": "..."} or {"texts": [...]}, optional beam, length_penalty, n_best,
                      return_attention, return_scores, attention_heads (every block's and head's weights)
    GET  /health      {"status": "ok"}
    GET  /info        the model, its vocabularies, decoding defaults, checkpoint, limits, version, and the
                      attention layout (blocks and heads)
    GET  /stats       the micro-batcher's counters (requests, batches, sentences, batch sizes)
    GET  /            the page: translate, beam's n-best, attention heatmaps

Concurrent requests are micro-batched: those arriving within max_wait of the first, with the same decoding
options, are decoded together in one call of the compiled decoder (at most max_batch sentences), which is what
makes many clients fast on one model. Decoding runs on one worker thread, so the event loop keeps answering
(health, bad input) while a batch decodes. FastAPI + uvicorn (the `serve` extra): the conventional ASGI stack,
with request validation from type hints and a graceful SIGTERM (in-flight requests finish) built in.
"""
# no `from __future__ import annotations`: FastAPI reads the handlers' annotations as objects
import asyncio
import dataclasses
import json
import math
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATIC = Path(__file__).with_name("static")
WIDTH_MULTIPLE = 16      # source widths of a decoding batch are multiples of this: few compiled shapes
WARM_WIDTHS = (16, 32)   # compiled at start-up: most sentences are shorter than 32 pieces


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; more is refused with a 4xx before anything is decoded."""
    max_texts: int = 64        # texts per request
    max_chars: int = 1000      # characters per text
    max_pieces: int = 256      # source pieces per text (after tokenisation)
    max_beam: int = 16
    max_batch: int = 32        # sentences decoded together, from one or several requests
    max_wait_ms: float = 5.0   # how long the first request of a batch waits for others

    def __post_init__(self):
        for name in ("max_texts", "max_chars", "max_pieces", "max_beam", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if not (isinstance(self.max_wait_ms, (int, float)) and 0 <= self.max_wait_ms < math.inf):
            raise ValueError(f"max_wait_ms: expected a number of milliseconds >= 0, got {self.max_wait_ms!r}")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: max_texts texts of max_chars 4-byte characters, JSON-escaped (up to 6
        bytes a character), and the options."""
        return self.max_texts * (self.max_chars * 6 + 8) + 4096


class RequestError(ValueError):
    """Bad input: answered with a 4xx naming the field."""

    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


@dataclass(frozen=True)
class Options:
    """A request's decoding options: requests with equal options can share a batch."""
    beam: int
    length_penalty: float
    n_best: int
    return_attention: bool
    return_scores: bool
    attention_heads: bool = False


@dataclass
class _Pending:
    texts: list[str]
    options: Options
    future: asyncio.Future


class MicroBatcher:
    """Decodes queued requests together: the first request of a batch waits up to max_wait for more with the
    same options, up to max_batch sentences; the batch is decoded by decode(texts, options) on one worker thread
    and each request gets its own slice of the results. A request of more than max_batch texts is a batch of
    its own. max_batch=1: one request at a time (batching off)."""

    def __init__(self, decode, max_batch: int, max_wait: float):
        self._decode, self.max_batch, self.max_wait = decode, max_batch, max_wait
        self._queue: asyncio.Queue | None = None
        self._task = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seq2seq-decode")
        self.requests = self.batches = self.sentences = 0
        self.batch_sizes: Counter = Counter()  # sentences per decoding call: how many calls had that many

    def stats(self) -> dict:
        return {"requests": self.requests, "batches": self.batches, "sentences": self.sentences,
                "largest_batch": max(self.batch_sizes, default=0),
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1000}

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """After the queue's requests are answered."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], options: Options) -> list:
        future = asyncio.get_running_loop().create_future()
        self.requests += 1
        await self._queue.put(_Pending(texts, options, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        waiting: list[_Pending] = []  # taken from the queue, with other options than the batch being formed
        stopping = False
        while waiting or not stopping:
            first = waiting.pop(0) if waiting else await self._queue.get()
            if first is None:
                stopping = True
                continue
            batch, size = [first], len(first.texts)
            for item in list(waiting):
                if item.options == first.options and size + len(item.texts) <= self.max_batch:
                    waiting.remove(item)
                    batch.append(item)
                    size += len(item.texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch and not stopping:
                left = deadline - loop.time()
                try:
                    item = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if item is None:
                    stopping = True
                elif item.options == first.options and size + len(item.texts) <= self.max_batch:
                    batch.append(item)
                    size += len(item.texts)
                else:
                    waiting.append(item)
            texts = [text for item in batch for text in item.texts]
            try:
                results = await loop.run_in_executor(self._executor, self._decode, texts, first.options)
            except Exception as error:  # noqa: BLE001 - each request answers with it; the loop goes on
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                continue
            self.batches += 1
            self.sentences += len(texts)
            self.batch_sizes[len(texts)] += 1
            start = 0
            for item in batch:
                if not item.future.done():  # a client that went away leaves a cancelled future
                    item.future.set_result(results[start:start + len(item.texts)])
                start += len(item.texts)


class TranslationService:
    """A Translator with the server's limits: checks requests, decodes batches, describes the model."""

    def __init__(self, translator, limits: ServeLimits = ServeLimits()):
        self.translator, self.limits = translator, limits
        config = translator.config
        if config.uses_positions:  # a Transformer reads at most max_positions source pieces
            self.limits = dataclasses.replace(limits, max_pieces=min(limits.max_pieces, config.max_positions))

    # ---- requests ----
    def parse(self, body: bytes) -> tuple[list[str], Options]:
        """The texts and options of a /translate body, or a RequestError naming the field."""
        limits = self.limits
        if len(body) > limits.max_body_bytes:
            raise RequestError("body", f"body: expected at most {limits.max_body_bytes} bytes, got {len(body)}", 413)
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError("body", f"body: expected a JSON object, got text that is not JSON ({error})") from None
        if not isinstance(request, dict):
            raise RequestError("body", f"body: expected a JSON object, got a {_json_type(request)}")
        known = {"text", "texts", "beam", "length_penalty", "n_best", "return_attention", "return_scores",
                 "attention_heads"}
        unknown = sorted(set(request) - known)
        if unknown:
            raise RequestError(unknown[0], f"{unknown[0]}: not a field of /translate (expected some of "
                                           f"{sorted(known)})")
        if ("text" in request) == ("texts" in request):
            raise RequestError("text", "text, texts: expected exactly one of \"text\" (a string) or \"texts\" "
                                       f"(a list of strings), got {'both' if 'text' in request else 'neither'}")
        if "text" in request:
            texts, field = [request["text"]], "text"
            if not isinstance(request["text"], str):
                raise RequestError("text", f"text: expected a string, got a {_json_type(request['text'])}")
        else:
            texts, field = request["texts"], "texts"
            if not isinstance(texts, list):
                raise RequestError("texts", f"texts: expected a list of strings, got a {_json_type(texts)}")
            if not texts:
                raise RequestError("texts", "texts: expected at least one string, got an empty list")
            if len(texts) > limits.max_texts:
                raise RequestError("texts", f"texts: expected at most {limits.max_texts} texts, got {len(texts)}",
                                   413)
        for number, text in enumerate(texts):
            name = field if field == "text" else f"texts[{number}]"
            if not isinstance(text, str):
                raise RequestError(name, f"{name}: expected a string, got a {_json_type(text)}")
            if len(text) > limits.max_chars:
                raise RequestError(name, f"{name}: expected at most {limits.max_chars} characters, got "
                                         f"{len(text)}", 413)
            pieces = len(self.translator.source_ids(text))  # what the model would read
            if pieces > limits.max_pieces:
                raise RequestError(name, f"{name}: expected at most {limits.max_pieces} source pieces, got "
                                         f"{pieces}", 413)
        defaults = self.translator.decoding
        beam = _integer(request, "beam", defaults.beam, 1, limits.max_beam)
        n_best = _integer(request, "n_best", 1, 1, beam)
        length_penalty = request.get("length_penalty", defaults.length_penalty)
        if length_penalty is None:
            length_penalty = defaults.length_penalty
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) \
                or not 0 <= length_penalty <= 10:
            raise RequestError("length_penalty", "length_penalty: expected a number in [0, 10], got "
                                                 f"{json.dumps(length_penalty)}")
        flags = {}
        for name in ("return_attention", "return_scores", "attention_heads"):
            flags[name] = request.get(name, False)
            if not isinstance(flags[name], bool):
                raise RequestError(name, f"{name}: expected true or false, got {json.dumps(flags[name])}")
        return texts, Options(beam, float(length_penalty), n_best, **flags)

    # ---- decoding (on the worker thread) ----
    @property
    def row_counts(self) -> list[int]:
        """The batch sizes a micro-batch is padded to (1, 8, 32, ... up to max_batch): each (rows, width) is a
        compiled program, so few sizes mean few compilations, at the cost of some decoded filler rows."""
        counts, rows = [1], 8
        while rows < self.limits.max_batch:
            counts.append(rows)
            rows *= 4
        return sorted({*counts, self.limits.max_batch})

    def decode(self, texts: list[str], options: Options) -> list[dict]:
        import warnings

        from .batching import round_width
        from .evaluate import width_limit

        ids = [self.translator.source_ids(text) for text in texts]
        real = [text for text, source in zip(texts, ids) if source]
        kwargs = dict(beam=options.beam, length_penalty=options.length_penalty, n_best=options.n_best,
                      pad_multiple=WIDTH_MULTIPLE)
        if real and len(real) <= self.limits.max_batch:
            # one batch of a standard shape: the texts, then copies of them as filler rows (answers discarded)
            rows = next(count for count in self.row_counts if count >= len(real))
            longest = max(len(source) for source in ids)
            width = round_width(longest, WIDTH_MULTIPLE, width_limit(self.translator.config) or sys.maxsize)
            texts = texts + [real[i % len(real)] for i in range(rows - len(real))]
            kwargs["batch_tokens"] = rows * width
        with warnings.catch_warnings():  # unseen characters and the like: the answer shows what was read
            warnings.simplefilter("ignore")
            translations = self.translator.decode(texts, **kwargs)
        return [self._answer(translation, options) for translation in translations[: len(ids)]]

    def _answer(self, translation, options: Options) -> dict:
        answer = {"translation": translation.text, "source": translation.source,
                  "source_pieces": list(translation.source_tokens)}
        hypotheses = []
        for k, hypothesis in enumerate(translation.hypotheses[: options.n_best]):
            entry = {"text": hypothesis.text, "pieces": list(hypothesis.tokens)}
            if options.return_scores:
                entry["score"] = hypothesis.score
            if options.return_attention or options.attention_heads:
                weights = self.translator.attention(translation, k, heads=True)  # [L, H, T, S]
                if options.return_attention:  # decoding's: the last block's, averaged over heads
                    entry["attention"] = None if weights is None else _rounded(weights[-1].mean(axis=0))
                if options.attention_heads:
                    entry["attention_heads"] = None if weights is None else _rounded(weights)
            hypotheses.append(entry)
        answer["hypotheses"] = hypotheses
        return answer

    def warm_up(self, batching: bool) -> float:
        """Compiles the default decoding (the run's beam and length penalty) for the common shapes, batches of
        each row count (only 1 with batching off) and sources up to 16 and 32 pieces, so that the first requests
        find the programs compiled (or loaded from the persistent compilation cache); returns the seconds it
        took."""
        started = time.perf_counter()
        for rows in self.row_counts if batching else [1]:
            for width in WARM_WIDTHS:
                self.translator.compile(rows, width, pad_multiple=WIDTH_MULTIPLE)
        return time.perf_counter() - started

    def info(self, batcher: MicroBatcher, startup_seconds: float | None) -> dict:
        from .cli import package_version

        translator = self.translator
        config = dataclasses.asdict(translator.config)
        return {"version": package_version(), "checkpoint": str(translator.checkpoint_path),
                "step": translator.step, "backend": translator.backend, "model": config,
                "src_vocab_size": len(translator.src_vocab), "tgt_vocab_size": len(translator.tgt_vocab),
                "tokenizer": translator.src_vocab.tokenizer, "lowercase": translator.data.lowercase,
                "max_len": translator.max_len, "decoding": translator.decoding.to_json(),
                "training": translator.training, "attention_layout": _layout(translator.attention_layout),
                "limits": dataclasses.asdict(self.limits), "batching": batcher.stats(),
                "startup_seconds": startup_seconds}


def _layout(layout) -> dict | None:
    return None if layout is None else {"layers": layout[0], "heads": layout[1]}


def _rounded(weights) -> list:
    """Nested lists of weights to 5 decimals (a JSON answer a tenth the size of float64's repr)."""
    return np.round(np.asarray(weights, dtype=np.float64), 5).tolist()


def _integer(request: dict, name: str, default: int, low: int, high: int) -> int:
    value = request.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(name, f"{name}: expected an integer in [{low}, {high}], got {json.dumps(value)}")
    return value


def _json_type(value) -> str:
    return {dict: "JSON object", list: "list", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def make_app(service: TranslationService, batching: bool = True, warm_up: bool = True):
    """The ASGI app: the API and the page over service, with its micro-batcher started and stopped with it."""
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse

    limits = service.limits
    batcher = MicroBatcher(service.decode, limits.max_batch if batching else 1, limits.max_wait_ms / 1000)
    state = {"startup_seconds": None}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        started = time.perf_counter()
        if warm_up:
            await asyncio.get_running_loop().run_in_executor(None, service.warm_up, batching)
        state["startup_seconds"] = time.perf_counter() - started
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="seq2seq-lab", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    @app.exception_handler(RequestError)
    async def request_error(request, error: RequestError):
        return JSONResponse({"error": str(error), "field": error.field}, status_code=error.status)

    @app.post("/translate")
    async def translate(request: Request):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
            raise RequestError("body", f"body: expected at most {limits.max_body_bytes} bytes, got {size}", 413)
        body = bytearray()
        async for chunk in request.stream():  # bounded whatever Content-Length claims
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise RequestError("body", f"body: expected at most {limits.max_body_bytes} bytes, got more", 413)
        texts, options = service.parse(bytes(body))
        try:
            results = await batcher.submit(texts, options)
        except ValueError as error:  # the translator's own checks: still the request's fault
            raise RequestError("texts", str(error)) from None
        return {"translations": results, "beam": options.beam, "length_penalty": options.length_penalty}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        return service.info(batcher, state["startup_seconds"])

    @app.get("/stats")
    async def stats():
        return batcher.stats()

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def add_arguments(parser) -> None:
    from .run_cli import add_checkpoint_argument, positive_int

    add_checkpoint_argument(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: loopback only; 0.0.0.0 serves every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start-up)")
    parser.add_argument("--backend", choices=("jax", "numpy"), default=None,
                        help="default: jax if installed, else numpy")
    parser.add_argument("--max-batch", type=positive_int, default=ServeLimits.max_batch,
                        help="sentences decoded together from concurrent requests")
    parser.add_argument("--max-wait-ms", type=float, default=ServeLimits.max_wait_ms,
                        help="how long a request waits for others to share its batch")
    parser.add_argument("--no-batching", action="store_true", help="decode one request at a time")
    parser.add_argument("--max-texts", type=positive_int, default=ServeLimits.max_texts, help="texts per request")
    parser.add_argument("--max-chars", type=positive_int, default=ServeLimits.max_chars, help="characters per text")
    parser.add_argument("--max-pieces", type=positive_int, default=ServeLimits.max_pieces,
                        help="source pieces per text (a Transformer's max_positions caps it)")
    parser.add_argument("--max-beam", type=positive_int, default=ServeLimits.max_beam, help="largest beam asked for")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="don't use JAX's persistent compilation cache (docs/cli.md)")


def run(args) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ValueError("serve: expected the serve extra installed (pip install -e '.[serve]': fastapi, "
                         "uvicorn), got no uvicorn") from None
    from .run_cli import compile_cache_of, load_run

    if not 0 <= args.port < 65536:
        raise ValueError(f"port: expected a port number in [0, 65535], got {args.port}")
    limits = ServeLimits(max_texts=args.max_texts, max_chars=args.max_chars, max_pieces=args.max_pieces,
                         max_beam=args.max_beam, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    started = time.perf_counter()
    translator = load_run(args.run, args.backend, args.checkpoint)
    with compile_cache_of(translator.backend, args):
        app = make_app(TranslationService(translator, limits), batching=not args.no_batching)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
        server = uvicorn.Server(config)
        original_startup = server.startup

        async def startup(sockets=None):
            await original_startup(sockets)
            if server.started:
                port = server.servers[0].sockets[0].getsockname()[1]
                print(f"serving {translator.checkpoint_path} (step {translator.step}, {translator.backend}) on "
                      f"http://{args.host}:{port}/ after {time.perf_counter() - started:.1f} s of start-up "
                      "(Ctrl-C or SIGTERM: finish the requests in flight and stop)", flush=True)

        server.startup = startup
        server.run()
    return 0
