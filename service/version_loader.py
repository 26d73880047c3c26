"""One model version, from its folder to a `Predictor` ready for traffic.

`open_version` does the slow, blocking part in a worker thread, so the event
loop keeps answering meanwhile: check the card (sha256 of the served file,
input and output names and shapes), build the onnxruntime session, and run a
warm-up inference at the batch sizes the batcher will use. `start_predictor`
then gives the version its own batcher (its own queue and session: rows of
different versions never share an onnxruntime call) reporting through an
observer bound to its version.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from service.batching import BatchObserver, MicroBatcher
from service.config import Settings
from service.model import OnnxModel
from service.predictor import Predictor

log = logging.getLogger("service.models")


async def open_version(settings: Settings, folder: Path) -> OnnxModel:
    """Checked, loaded and warmed up; raises `ModelLoadError` saying what is wrong."""

    def build() -> OnnxModel:
        model = OnnxModel(
            folder,
            variant=settings.model_variant,
            intra_op_threads=settings.ort_intra_op_threads,
            inter_op_threads=settings.ort_inter_op_threads,
        )
        model.warm_up(settings.max_batch_size)
        return model

    model = await asyncio.to_thread(build)
    info = model.info
    log.info(
        "model loaded",
        extra={
            "model": info.name,
            "version": info.version,
            "variant": info.variant,
            "file": str(info.path),
            "load_seconds": round(info.load_seconds, 3),
            "batching": settings.batching,
        },
    )
    return model


async def start_predictor(
    settings: Settings, model: OnnxModel, observer: BatchObserver
) -> Predictor:
    """The version's own batcher, started, behind a `Predictor`."""
    batcher = MicroBatcher(
        model.predict,
        max_batch_size=settings.max_batch_size if settings.batching else 1,
        max_queue_delay_s=settings.max_queue_delay_ms / 1000,
        max_queue_rows=settings.max_queue_size,
        observer=observer,
        merge_requests=settings.batching,
    )
    await batcher.start()
    return Predictor(batcher, model.info, timeout_s=settings.request_timeout_s)
