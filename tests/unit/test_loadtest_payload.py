"""Load-test bodies made from a served signature (scripts/loadtest/payload.py)."""

from __future__ import annotations

from scripts.loadtest.payload import synthesize


def test_one_input_gives_bare_instances_with_unknown_dims_as_one() -> None:
    body = synthesize({"x": ("DT_FLOAT", [-1, 2, -1])}, "serving_default")
    assert body == {"signature_name": "serving_default", "instances": [[[0.0], [0.0]]]}


def test_several_inputs_give_keyed_instances_of_each_dtype() -> None:
    body = synthesize(
        {
            "text": ("DT_STRING", [-1]),
            "flag": ("DT_BOOL", [-1]),
            "ids": ("DT_INT64", [-1, 3]),
            "any": ("DT_FLOAT", None),
        },
        "classify",
    )
    assert body["signature_name"] == "classify"
    assert body["instances"] == [{"text": "", "flag": False, "ids": [0, 0, 0], "any": 0.0}]
    assert isinstance(body["instances"][0]["ids"][0], int)
