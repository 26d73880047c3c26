"""Locust load-test suite for mnist-serve: real use, every answer checked.

Run it headless against any deployment (one command; exit code 0 = thresholds met):

    locust -f tests/load/locustfile.py --headless --host http://127.0.0.1:8000 \
        -u 32 -r 8 -t 60s --csv results/load --html results/load.html \
        [--api-key KEY] [--min-accuracy 0.95] [--max-fail-ratio 0.01] \
        [--max-p95-ms 500] [--max-p99-ms 1000] [UserClass ...]

Without user class names the `MixedUser` profile runs; name one or more of
`SingleImageUser BatchUser PixelsUser V2User MixedUser` to run those instead
(several named classes share the users by their `weight`).

The images come from a labelled pool (MNIST test digits re-rendered as PNG and
JPEG files of several sizes, polarities and inks; `evaluation/uploads.py`). Each
answer is validated and its digit compared with the label: the run fails when
accuracy < `--min-accuracy`, failures > `--max-fail-ratio`, or the aggregated
p95/p99 exceed their limits. `--csv PREFIX` also writes `PREFIX_accuracy.json`.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from evaluation.uploads import Item, build_pool, multipart
from tests.load.checks import (
    Accuracy,
    BadAnswer,
    Thresholds,
    check_batch,
    check_prediction,
    check_v2,
)

log = logging.getLogger("mnist-load")
MODEL = os.environ.get("MNIST_LOAD_MODEL", "mnist-mlp")


@dataclass
class Shared:
    """State every simulated user reads; built once in `init` from the options."""

    pool: list[Item] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    batch_size: int = 16
    think_s: float = 0.0
    accuracy: Accuracy = field(default_factory=Accuracy)
    thresholds: Thresholds = field(default_factory=Thresholds)


SHARED = Shared()


def _add_options(parser: LocustArgumentParser) -> None:
    # plain add_argument: Locust's argument groups reject its own UI keywords (is_secret)
    group = parser
    group.add_argument(
        "--api-key",
        default=os.environ.get("MNIST_API_KEY", ""),
        is_secret=True,
        help="API key sent as X-API-Key (default: $MNIST_API_KEY; empty = none)",
    )
    group.add_argument(
        "--min-accuracy",
        type=float,
        default=0.95,
        help="Fail the run when the share of correct digits is below this",
    )
    group.add_argument(
        "--max-fail-ratio",
        type=float,
        default=0.01,
        help="Fail the run when more requests than this share failed",
    )
    group.add_argument(
        "--max-p95-ms",
        type=float,
        default=0.0,
        help="Fail the run when the aggregated p95 exceeds this (0 = no limit)",
    )
    group.add_argument(
        "--max-p99-ms",
        type=float,
        default=0.0,
        help="Fail the run when the aggregated p99 exceeds this (0 = no limit)",
    )
    group.add_argument("--pool-size", type=int, default=300, help="Labelled images in the pool")
    group.add_argument("--pool-seed", type=int, default=0, help="Seed of the pool's draw")
    group.add_argument(
        "--pool-data",
        default="",
        help="Folder with the full MNIST t10k IDX files (default: the committed "
        "1,000-digit sample in tests/data)",
    )
    group.add_argument(
        "--label-offset",
        type=int,
        default=0,
        help="Shift every label by this (mod 10): a deliberately wrong pool, "
        "for checking that the accuracy gate fails a run",
    )
    group.add_argument("--batch-size", type=int, default=16, help="Images per batch request")
    group.add_argument(
        "--think-time-ms",
        type=float,
        default=0.0,
        help="Mean pause between a user's requests (0 = closed loop, max load)",
    )


def _on_init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if not getattr(options, "user_classes", None):
        environment.user_classes[:] = [MixedUser]  # the default profile
    if isinstance(environment.runner, MasterRunner):
        SHARED.thresholds = _thresholds(options)
        return  # the master sends no requests: no pool needed
    data = Path(options.pool_data) if options.pool_data else None
    SHARED.pool = build_pool(
        options.pool_size, seed=options.pool_seed, data_dir=data, label_offset=options.label_offset
    )
    SHARED.headers = {"X-API-Key": options.api_key} if options.api_key else {}
    SHARED.batch_size = options.batch_size
    SHARED.think_s = options.think_time_ms / 1000
    SHARED.thresholds = _thresholds(options)


def _thresholds(options: Any) -> Thresholds:
    return Thresholds(
        min_accuracy=options.min_accuracy,
        max_fail_ratio=options.max_fail_ratio,
        max_p95_ms=options.max_p95_ms,
        max_p99_ms=options.max_p99_ms,
    )


def _on_test_start(**_: Any) -> None:
    SHARED.accuracy.reset()


def _send_accuracy(data: dict[str, Any], **_: Any) -> None:
    data["mnist_accuracy"] = SHARED.accuracy.to_dict()
    SHARED.accuracy.reset()  # each report carries only what is new


def _receive_accuracy(data: dict[str, Any], **_: Any) -> None:
    SHARED.accuracy.merge(data.get("mnist_accuracy", {}))


def _judge_run(environment: Environment, **_: Any) -> None:
    """Turn the thresholds into the process exit code."""
    if isinstance(environment.runner, WorkerRunner) or environment.runner is None:
        return
    total = environment.stats.total
    summary = SHARED.accuracy.summary()
    problems = SHARED.thresholds.violations(
        accuracy=SHARED.accuracy,
        requests=total.num_requests,
        fail_ratio=total.fail_ratio,
        p95_ms=total.get_response_time_percentile(0.95) or 0.0,
        p99_ms=total.get_response_time_percentile(0.99) or 0.0,
    )
    if environment.runner.exceptions:
        problems.append(f"{len(environment.runner.exceptions)} exceptions in the locustfile")
    log.info(
        "accuracy %.2f%% over %d images; by kind: %s",
        100 * SHARED.accuracy.ratio,
        SHARED.accuracy.checked,
        ", ".join(f"{k} {v['accuracy']:.1%}" for k, v in summary["by_kind"].items()),
    )
    csv_prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if csv_prefix:
        report = {**summary, "passed": not problems, "problems": problems}
        Path(f"{csv_prefix}_accuracy.json").write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2)
        )
    if problems:
        log.error("FAILED: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        log.info("PASSED: every threshold met")
        environment.process_exit_code = 0


def _listen(hook: Any, handler: Callable[..., Any]) -> None:
    hook.add_listener(handler)  # locust's EventHook is untyped


_listen(events.init_command_line_parser, _add_options)
_listen(events.init, _on_init)
_listen(events.test_start, _on_test_start)
_listen(events.report_to_master, _send_accuracy)
_listen(events.worker_report, _receive_accuracy)
_listen(events.quitting, _judge_run)


class DigitUser(FastHttpUser):
    """Shared plumbing: draw labelled images, send them, check every answer."""

    abstract = True
    network_timeout = 30.0
    connection_timeout = 10.0

    def wait_time(self) -> float:
        return random.expovariate(1 / SHARED.think_s) if SHARED.think_s else 0.0

    def draw(self, count: int = 1) -> list[Item]:
        pool = SHARED.pool
        return random.sample(pool, count) if count <= len(pool) else random.choices(pool, k=count)

    def _post(
        self, path: str, name: str, body: bytes, content_type: str, check: Callable[[Any], None]
    ) -> None:
        """POST, then `check(parsed JSON)`; a bad status, body or answer fails the request."""
        headers = {**SHARED.headers, "Content-Type": content_type}
        with self.client.post(
            path,
            data=body,  # type: ignore[arg-type]  # bytes work; the stub says str | dict
            headers=headers,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                check(orjson.loads(response.content or b""))
            except orjson.JSONDecodeError:
                response.failure("answer is not JSON")
            except BadAnswer as error:
                response.failure(f"bad answer: {error}")

    def single(self, item: Item, name: str, body: bytes, content_type: str) -> None:
        def check(answer: Any) -> None:
            SHARED.accuracy.add(item.kind, check_prediction(answer), item.label)

        self._post("/v1/predict", name, body, content_type, check)

    def upload_file(self) -> None:
        (item,) = self.draw()
        body, content_type = multipart("file", [item])
        self.single(item, "/v1/predict [multipart]", body, content_type)

    def upload_raw(self) -> None:
        (item,) = self.draw()
        self.single(item, "/v1/predict [raw image]", item.body, item.content_type)

    def upload_base64(self) -> None:
        (item,) = self.draw()
        body = orjson.dumps({"image": item.b64})
        self.single(item, "/v1/predict [json base64]", body, "application/json")

    def send_pixels(self) -> None:
        (item,) = self.draw()
        body = orjson.dumps({"pixels": item.pixels})

        def check(answer: Any) -> None:
            SHARED.accuracy.add("pixels", check_prediction(answer), item.label)

        self._post("/v1/predict", "/v1/predict [json pixels]", body, "application/json", check)

    def batch(self, count: int, *, as_json: bool) -> None:
        items = self.draw(count)
        if as_json:
            name = "/v1/predict/batch [json base64]"
            body, content_type = (
                orjson.dumps({"images": [i.b64 for i in items]}),
                "application/json",
            )
        else:
            name = "/v1/predict/batch [multipart]"
            body, content_type = multipart("files", items)
        self._post(
            "/v1/predict/batch",
            name,
            body,
            content_type,
            lambda answer: self._score(items, check_batch(answer, len(items))),
        )

    def v2_infer(self, count: int, *, as_files: bool) -> None:
        items = self.draw(count)
        if as_files:
            name = "/v2 infer [BYTES files]"
            tensor = {
                "name": "image",
                "shape": [count],
                "datatype": "BYTES",
                "data": [i.b64 for i in items],
            }
        else:
            name = "/v2 infer [UINT8 pixels]"
            tensor = {
                "name": "image_u8",
                "shape": [count, 28, 28],
                "datatype": "UINT8",
                "data": [i.pixels for i in items],
            }
        body = orjson.dumps({"inputs": [tensor]})
        kind = None if as_files else "pixels"
        self._post(
            f"/v2/models/{MODEL}/infer",
            name,
            body,
            "application/json",
            lambda answer: self._score(items, check_v2(answer, count), kind),
        )

    @staticmethod
    def _score(items: list[Item], digits: list[int], kind: str | None = None) -> None:
        for item, digit in zip(items, digits, strict=True):
            SHARED.accuracy.add(kind or item.kind, digit, item.label)


class SingleImageUser(DigitUser):
    """A person or app uploading one photo/drawing at a time."""

    weight = 6

    @task(4)
    def multipart_upload(self) -> None:
        self.upload_file()

    @task(1)
    def raw_upload(self) -> None:
        self.upload_raw()

    @task(1)
    def base64_upload(self) -> None:
        self.upload_base64()


class BatchUser(DigitUser):
    """A script classifying a folder of scans, `--batch-size` images per request."""

    weight = 1

    @task(1)
    def multipart_batch(self) -> None:
        self.batch(SHARED.batch_size, as_json=False)

    @task(1)
    def json_batch(self) -> None:
        self.batch(SHARED.batch_size, as_json=True)


class PixelsUser(DigitUser):
    """A canvas front end that already sends 28x28 pixels as JSON."""

    weight = 2

    @task
    def pixels(self) -> None:
        self.send_pixels()


class V2User(DigitUser):
    """An existing KServe/Triton client speaking the Open Inference Protocol v2."""

    weight = 1

    @task(2)
    def uint8_tensor(self) -> None:
        self.v2_infer(random.randint(1, 8), as_files=False)

    @task(1)
    def image_files(self) -> None:
        self.v2_infer(random.randint(1, 4), as_files=True)


class MixedUser(DigitUser):
    """The realistic mix: mostly single uploads from people, some pixels from the web
    page, a few batch jobs and v2 clients (the default profile)."""

    weight = 1

    @task(45)
    def multipart_upload(self) -> None:
        self.upload_file()

    @task(10)
    def raw_upload(self) -> None:
        self.upload_raw()

    @task(10)
    def base64_upload(self) -> None:
        self.upload_base64()

    @task(20)
    def pixels(self) -> None:
        self.send_pixels()

    @task(5)
    def batch_job(self) -> None:
        self.batch(SHARED.batch_size, as_json=random.random() < 0.5)

    @task(10)
    def v2_client(self) -> None:
        self.v2_infer(random.randint(1, 4), as_files=random.random() < 0.3)
