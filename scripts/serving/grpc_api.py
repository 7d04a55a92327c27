"""TF Serving's gRPC API on the serving core: ``tensorflow.serving.PredictionService``
(Predict, GetModelMetadata, Classify, Regress, MultiInference) and
``tensorflow.serving.ModelService`` (GetModelStatus, HandleReloadConfigRequest).

Each handler turns its request proto into a core call and the result into its response
proto. A client's mistake is a :class:`ServingError` answered with its canonical code
(messages longer than 1024 characters truncated as TF Serving's ``ToGRPCStatus`` does);
any other exception is a server fault, logged with its traceback and answered INTERNAL.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from scripts.log import log
from scripts.serving import inference, tensor_proto
from scripts.serving.app import ServingCore
from scripts.serving.errors import ServingError, failed_precondition, invalid
from scripts.serving.models import Servable, Signature

T = TypeVar("T")
MESSAGE_LIMIT = 1024  # grpc_status_util.cc
SIGNATURE_DEF = "signature_def"
# ModelVersionStatus.State (get_model_status.proto) by the manager's state names.
STATES = {"START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}
ERROR_CODE_UNKNOWN = 2  # tensorflow.error.Code.UNKNOWN: a version that failed to load


def _resolve(core: ServingCore, spec: Any) -> Servable:
    version = spec.version.value if spec.HasField("version") else None
    return core.resolve(spec.name, version, spec.version_label or None)


def _require_spec(request: Any) -> Any:
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    return request.model_spec


def _predict_signature(servable: Servable, name: str) -> Signature:
    key = name or inference.DEFAULT_SIGNATURE
    if key not in servable.signatures:  # predict_util.cc answers FAILED_PRECONDITION
        raise failed_precondition(f'Serving signature key "{key}" not found.')
    return servable.signatures[key]


def _set_spec(target: Any, name: str, signature_name: str, version: int) -> None:
    """TF Serving's ``MakeModelSpec``: an empty signature name is the default's."""
    target.name = name
    target.signature_name = signature_name or inference.DEFAULT_SIGNATURE
    target.version.value = version


def _fill_classifications(result: Any, classified: inference.Classifications) -> None:
    for row in classified.rows:
        classifications = result.classifications.add()
        for label, score in row:
            item = classifications.classes.add()
            if classified.has_labels:
                item.label = label.decode("utf-8", errors="replace")
            if classified.has_scores:
                item.score = score


def _fill_regressions(result: Any, values: list[float]) -> None:
    for value in values:
        result.regressions.add().value = value


async def _answer(context: Any, call: Callable[[], Awaitable[T]]) -> T:
    """Run one handler; abort with the canonical code of whatever went wrong."""
    try:
        return await call()
    except ServingError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - a server fault: INTERNAL, never UNKNOWN
        log.exception("gRPC handler failed")
        error = ServingError("INTERNAL", f"{type(exc).__name__}: {exc}")
    message = error.message
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT] + "...TRUNCATED"
    await context.abort(error.grpc_code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort raises


def build_prediction_service(core: ServingCore) -> Any:
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        inference_pb2,
        model_pb2,
        predict_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    async def metered(model: str, api: str, call: Callable[[], Awaitable[T]]) -> T:
        started, status = time.perf_counter(), "OK"
        try:
            return await call()
        except ServingError as exc:
            status = exc.code
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            core.metrics.requests.labels(model, status, "GRPC").inc()
            core.metrics.latency.labels(model, api, "GRPC").observe(
                (time.perf_counter() - started) * 1e6
            )

    async def predict(request: Any) -> Any:
        spec = _require_spec(request)
        servable = _resolve(core, spec)
        signature = _predict_signature(servable, spec.signature_name)
        inputs = tensor_proto.predict_inputs(request.inputs, signature)
        outputs = await core.predict(servable, signature, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        _set_spec(response.model_spec, servable.name, signature.name, servable.version)
        for key, array in outputs.items():
            response.outputs[key].CopyFrom(tensor_proto.tensor_to_proto(array))
        return response

    async def metadata(request: Any) -> Any:
        spec = _require_spec(request)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF:
                raise invalid(f"Metadata field {field} is not supported")
        servable = _resolve(core, spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signatures.items():
            signature_map.signature_def[name].CopyFrom(sig.proto)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF].Pack(signature_map)
        return response

    async def classify(request: Any) -> Any:
        spec = _require_spec(request)
        servable = _resolve(core, spec)
        examples = inference.input_examples(request.input)
        classified = await core.classify(servable, spec.signature_name, examples)
        response = classification_pb2.ClassificationResponse()
        _set_spec(response.model_spec, spec.name, spec.signature_name, servable.version)
        _fill_classifications(response.result, classified)
        return response

    async def regress(request: Any) -> Any:
        spec = _require_spec(request)
        servable = _resolve(core, spec)
        examples = inference.input_examples(request.input)
        values = await core.regress(servable, spec.signature_name, examples)
        response = regression_pb2.RegressionResponse()
        _set_spec(response.model_spec, spec.name, spec.signature_name, servable.version)
        _fill_regressions(response.result, values)
        return response

    async def multi_inference(request: Any) -> Any:
        # The servable is the first task's (multi_inference_helper.cc); no task: no name.
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        servable = _resolve(core, first)
        for task in request.tasks:
            if not task.model_spec.name:
                raise invalid("Found ModelSpec with an empty model name.")
            if task.model_spec.name != first.name:
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            # Stricter than TF Serving, which answers every task from the first task's
            # version: a task naming another version is refused, not silently redirected.
            if _resolve(core, task.model_spec).version != servable.version:
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model version."
                )
        tasks = [
            inference.Task(task.model_spec.signature_name, task.method_name)
            for task in request.tasks
        ]
        results = await core.multi_inference(
            servable, tasks, inference.input_examples(request.input)
        )
        response = inference_pb2.MultiInferenceResponse()
        for result in results:
            item = response.results.add()
            _set_spec(item.model_spec, first.name, result.signature_name, servable.version)
            if result.classifications is not None:
                _fill_classifications(item.classification_result, result.classifications)
            if result.regressions is not None:
                _fill_regressions(item.regression_result, result.regressions)
        return response

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
        async def Predict(self, request: Any, context: Any) -> Any:
            name = request.model_spec.name
            return await _answer(
                context, lambda: metered(name, "predict", lambda: predict(request))
            )

        async def GetModelMetadata(self, request: Any, context: Any) -> Any:
            return await _answer(context, lambda: metadata(request))

        async def Classify(self, request: Any, context: Any) -> Any:
            name = request.model_spec.name
            return await _answer(
                context, lambda: metered(name, "classify", lambda: classify(request))
            )

        async def Regress(self, request: Any, context: Any) -> Any:
            name = request.model_spec.name
            return await _answer(
                context, lambda: metered(name, "regress", lambda: regress(request))
            )

        async def MultiInference(self, request: Any, context: Any) -> Any:
            return await _answer(context, lambda: multi_inference(request))

    return PredictionService()


def build_model_service(core: ServingCore) -> Any:
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
    )

    async def status(request: Any) -> Any:
        spec = _require_spec(request)
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for state in core.model_status(spec.name, version, spec.version_label or None):
            item = response.model_version_status.add()
            item.version = state.version
            item.state = STATES.get(state.state, 0)
            if state.error:
                item.status.error_code = ERROR_CODE_UNKNOWN
                item.status.error_message = state.error
        return response

    async def reload(request: Any) -> Any:
        await core.reload(request.config)
        # Requested metric_names are answered with no increase: this server keeps no
        # TensorFlow-internal counters to report.
        response = model_management_pb2.ReloadConfigResponse()
        for name in request.metric_names:
            response.metric.add(name=name, int64_value_increase=0)
        return response

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
        async def GetModelStatus(self, request: Any, context: Any) -> Any:
            return await _answer(context, lambda: status(request))

        async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:
            return await _answer(context, lambda: reload(request))

    return ModelService()


def add_grpc_services(server: Any, core: ServingCore) -> None:
    """Register PredictionService and ModelService on a ``grpc.aio`` server."""
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        build_prediction_service(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(build_model_service(core), server)
