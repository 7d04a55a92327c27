"""TF Serving's warm-up file, made from model.yaml's ``sample_request`` without TensorFlow.

TF Serving replays ``VERSION/assets.extra/tf_serving_warmup_requests`` (a TFRecord file
of ``tensorflow.serving.PredictionLog``, at most 1000 records) when it loads a version,
before it reports the version AVAILABLE (``--enable_model_warmup``, default true), so
the first real request does not pay for TensorFlow's lazy initialisation. ``package``
writes the file into the release archive (never into the SavedModel directory it
reads); ``python -m scripts serve`` replays it (scripts/serving/warmup.py).

The records are ``PredictionLog{predict_log{request: PredictRequest}}``, built by field
number over the load test's ``PredictRequest`` (scripts/loadtest/grpc_payload.py: the
sample's JSON decoded exactly as the REST API decodes it). Field numbers, from
tensorflow_serving/apis/prediction_log.proto: ``PredictionLog{log_metadata=1,
classify_log=2, regress_log=3, multi_inference_log=4, session_run_log=5,
predict_log=6}``, ``PredictLog{request=1, response=2}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

from google.protobuf import message

from scripts import tfrecord
from scripts.errors import ConfigError, InvalidModelError, UsageError
from scripts.loadtest import grpc_payload
from scripts.model_spec import MAX_WARMUP_RECORDS, ModelSpec
from scripts.proto_builder import FieldType, add_field, declare

WARMUP_FILE = PurePosixPath("assets.extra", "tf_serving_warmup_requests")
_PACKAGE = "tfpipeline.warmup"


def _declare(proto: Any) -> None:
    predict_log = proto.message_type.add(name="PredictLog")
    add_field(
        predict_log,
        "request",
        1,
        FieldType.TYPE_MESSAGE,
        type_name=f".{grpc_payload.PACKAGE}.PredictRequest",
    )
    log = proto.message_type.add(name="PredictionLog")
    add_field(log, "predict_log", 6, FieldType.TYPE_MESSAGE, type_name=f".{_PACKAGE}.PredictLog")


@cache
def messages() -> dict[str, Any]:
    grpc_payload.messages()  # declares the PredictRequest this file builds on
    return declare(
        "tfpipeline_warmup.proto",
        _PACKAGE,
        ["tfpipeline_grpcload.proto"],
        _declare,
        ("PredictLog", "PredictionLog"),
    )


@dataclass(frozen=True)
class WarmupPlan:
    """What ``package`` is asked to write: ``requests`` copies of ``sample_request``.

    ``requests`` 0 writes nothing; ``reason`` then says why (for the result).
    """

    sample_request: dict[str, Any] | None
    requests: int
    reason: str = ""

    @classmethod
    def resolve(
        cls,
        spec: ModelSpec | None,
        spec_path: Path | None,
        *,
        requests: int | None = None,
        disabled: bool = False,
    ) -> WarmupPlan:
        """model.yaml's ``warmup`` (if any), then the flags: ``--no-warmup`` wins,
        ``--warmup-requests`` replaces the count."""
        if requests is not None and not 1 <= requests <= MAX_WARMUP_RECORDS:
            raise UsageError(
                f"--warmup-requests {requests} is out of range",
                cause=f"TF Serving replays at most {MAX_WARMUP_RECORDS} warm-up records",
                fix=f"pass 1 to {MAX_WARMUP_RECORDS}, or --no-warmup for none",
            )
        if disabled:
            return cls(None, 0, "turned off by --no-warmup")
        if spec is None:
            return cls(None, 0, f"no model.yaml ({spec_path}) to take a sample_request from")
        if not spec.warmup.enabled:
            return cls(None, 0, f"turned off in {spec_path} (warmup.enabled: false)")
        if not spec.sample_request:
            return cls(None, 0, f"{spec_path} has no sample_request")
        return cls(spec.sample_request, requests or spec.warmup.requests)


@dataclass(frozen=True)
class WarmupResult:
    """What the archive carries: ``source`` is ``generated`` (written by package),
    ``saved_model`` (the model's own file, kept) or ``none``."""

    source: str
    records: int
    note: str

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "records": self.records,
            "path": str(WARMUP_FILE) if self.source != "none" else None,
            "note": self.note,
        }


def predict_log_record(predict_request: bytes) -> bytes:
    """One ``PredictionLog{predict_log{request}}`` around serialised PredictRequest bytes."""
    log = messages()["PredictionLog"]()
    log.predict_log.request.ParseFromString(predict_request)
    data: bytes = log.SerializeToString()
    return data


def build_warmup_file(
    body: dict[str, Any], model: str, signature_defs: dict[str, Any], requests: int
) -> bytes:
    """The TFRecord file: ``requests`` PredictionLog records of the REST ``body``.

    ``signature_defs`` are the SavedModel's (scripts/artifact/savedmodel.py); raises
    ConfigError when the body names a signature the model lacks or does not fit it.
    """
    signature_name = body.get("signature_name") or "serving_default"
    if signature_name not in signature_defs:
        raise ConfigError(
            f"sample_request names signature {signature_name!r}, which the model lacks",
            fix=f"use one of: {', '.join(sorted(signature_defs)) or 'none'}",
        )
    request = grpc_payload.predict_request(body, model, signature_defs[signature_name])
    return tfrecord.encode([predict_log_record(request)] * requests)


def check_warmup_file(path: Path) -> int:
    """Count the records of a warm-up file a SavedModel ships, as TF Serving would read
    them; InvalidModelError if TF Serving would refuse to load the version."""
    log_class = messages()["PredictionLog"]
    count = 0
    fix = "rewrite it (TFRecords of PredictionLog), or remove it and let package write one"
    try:
        with path.open("rb") as stream:
            for record in tfrecord.read_records(stream):
                count += 1
                log_class.FromString(record)  # other log kinds stay unknown fields
    except tfrecord.TFRecordError as exc:
        raise InvalidModelError(
            f"warm-up file {path} is not a valid TFRecord file: {exc}",
            cause="a truncated or corrupted file; TF Serving would fail to load the version",
            fix=fix,
        ) from exc
    except message.DecodeError as exc:
        raise InvalidModelError(
            f"record {count} of warm-up file {path} is not a PredictionLog: {exc}",
            cause="TF Serving would fail to load the version",
            fix=fix,
        ) from exc
    if count > MAX_WARMUP_RECORDS:
        raise InvalidModelError(
            f"warm-up file {path} holds {count} records",
            cause=f"TF Serving refuses more than {MAX_WARMUP_RECORDS} and fails the load",
            fix=fix,
        )
    return count


def prepare(
    version_dir: Path, model: str, signature_defs: dict[str, Any], plan: WarmupPlan
) -> tuple[bytes | None, WarmupResult]:
    """The warm-up file to add to the archive (None: nothing to add) and what was done.

    A SavedModel that ships its own file keeps it, whatever ``plan`` says.
    """
    shipped = version_dir / WARMUP_FILE
    if shipped.is_file():
        count = check_warmup_file(shipped)
        return None, WarmupResult(
            "saved_model",
            count,
            f"the SavedModel ships {WARMUP_FILE} ({count} records): kept as it is, none generated",
        )
    if plan.requests == 0 or plan.sample_request is None:
        return None, WarmupResult("none", 0, plan.reason)
    data = build_warmup_file(plan.sample_request, model, signature_defs, plan.requests)
    return data, WarmupResult(
        "generated", plan.requests, f"{plan.requests} × sample_request as PredictionLog records"
    )
