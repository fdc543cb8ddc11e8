"""Loading refuses models that break docs/model-format.md, naming the key or tensor at fault."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper
from support.models import make_step_model

from edge_lstm import ModelFormatError, load_model
from edge_lstm.contract import METADATA_KEY


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return make_step_model(tmp_path / "good.onnx")


def rewrite(path: Path, edit: Callable[[onnx.ModelProto], None]) -> Path:
    m = onnx.load(str(path))
    edit(m)
    out = path.with_name("edited.onnx")
    onnx.save(m, str(out))
    return out


def edit_meta(path: Path, change: Callable[[dict[str, Any]], object]) -> Path:
    def edit(m: onnx.ModelProto) -> None:
        prop = next(p for p in m.metadata_props if p.key == METADATA_KEY)
        doc = json.loads(prop.value)
        change(doc)
        prop.value = json.dumps(doc)

    return rewrite(path, edit)


def refused(path: Path) -> str:
    with pytest.raises(ModelFormatError) as e:
        load_model(path)
    return str(e.value)


def test_good_model_loads(good: Path) -> None:
    m = load_model(good)
    assert m.meta.features == ["a", "b", "c"]
    assert m.state_shapes == [(1, 8), (1, 8)]
    assert len(m.sha256) == 64


def test_missing_file(tmp_path: Path) -> None:
    assert "not found" in refused(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path: Path) -> None:
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"definitely not protobuf")
    assert "not a loadable ONNX model" in refused(p)


def test_no_metadata(good: Path) -> None:
    p = rewrite(good, lambda m: m.ClearField("metadata_props"))
    assert "no 'edge_lstm' metadata" in refused(p)


def test_metadata_not_json(good: Path) -> None:
    def edit(m: onnx.ModelProto) -> None:
        m.metadata_props[0].value = "{not json"

    assert "not valid JSON" in refused(rewrite(good, edit))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.update(schema_version=99), "newer than this edge-lstm understands"),
        (lambda d: d.pop("features"), "'features'"),
        (lambda d: d.update(surprise=1), "'surprise'"),
        (lambda d: d["scaling"].update(scale=[1.0, 0.0, 1.0]), "scaling.scale[1]"),
        (lambda d: d["scaling"].update(offset=[0.0]), "scaling.offset has 1 values for 3 features"),
        (lambda d: d["output"].update(kind="regression"), "'output.kind'"),
        (lambda d: d["output"].update(names=["a", "zz", "c"]), "['zz'] are not features"),
        (lambda d: d["calibration"].update(residual_std=[1.0, -1.0, 1.0]), "residual_std[1]"),
        (lambda d: d["calibration"].pop("residual_mean"), "calibration.residual_mean is required"),
        (lambda d: d.update(features=["a", "a", "c"]), "features must be unique"),
        (lambda d: d["io"]["state"][0].update(input="x"), "more than once"),
    ],
)
def test_bad_metadata_is_refused_naming_the_key(
    good: Path, change: Callable[[dict[str, Any]], object], expected: str
) -> None:
    assert expected in refused(edit_meta(good, change))


def test_metadata_naming_a_missing_tensor(good: Path) -> None:
    p = edit_meta(good, lambda d: d["io"]["state"][1].update(input="state.nope.in"))
    assert "'state.nope.in'" in refused(p)


def test_feature_count_must_match_the_input(good: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["features"] = ["a", "b"]
        d["scaling"] = {"offset": [0, 0], "scale": [1, 1]}
        d["output"]["names"] = ["a", "b"]
        d["calibration"].update(residual_mean=[0, 0], residual_std=[1, 1])

    assert "lists 2 features" in refused(edit_meta(good, change))


def test_unlisted_graph_tensor_is_refused(good: Path) -> None:
    def edit(m: onnx.ModelProto) -> None:
        m.graph.output.append(helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["batch", 8]))

    assert "['feat'] are not listed" in refused(rewrite(good, edit))


def test_fixed_batch_axis_is_refused(good: Path) -> None:
    def edit(m: onnx.ModelProto) -> None:
        dim = m.graph.input[0].type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 4

    assert "axis 0 must be the dynamic batch axis" in refused(rewrite(good, edit))
