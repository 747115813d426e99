"""The MLServer model repository layout, the V2 smoke inputs and output checks, and the latency figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from operators.serving.checks import CheckFailed, check_v2_outputs, measure_latency, percentile, v2_smoke_inputs
from operators.serving.repository import ModelRepository


def model_folder(tmp_path: Path, marker: str) -> Path:
    folder = tmp_path / f"mlflow-{marker}"
    folder.mkdir()
    (folder / "MLmodel").write_text(f"marker: {marker}\n")
    return folder


def test_each_version_gets_its_folder_and_settings_and_the_default_entry_points_at_one(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    for version in ("2", "10", "1"):
        repository.install("m", version, model_folder(tmp_path, version))
    assert repository.installed_versions("m") == ["1", "2", "10"]
    settings = json.loads((tmp_path / "repo/m/10/model-settings.json").read_text())
    assert settings["parameters"] == {"uri": "./model", "version": "10"} and settings["name"] == "m"
    assert (tmp_path / "repo/m/10/model/MLmodel").read_text() == "marker: 10\n"
    assert repository.default_version("m") is None

    repository.set_default("m", "2")
    default = json.loads((tmp_path / "repo/m/default/model-settings.json").read_text())
    assert default["parameters"]["version"] == "default", "sorts after every number: MLServer's default"
    assert default["parameters"]["uri"] == "../2/model" and repository.default_version("m") == "2"
    assert "default" not in repository.installed_versions("m")
    # the default entry answers as the version it serves: its runtime lies beside its settings
    module, runtime = default["implementation"].rsplit(".", 1)
    source = (tmp_path / "repo/m/default" / f"{module}.py").read_text()
    assert f"class {runtime}(MLflowRuntime)" in source and "X-Model-Version" in source
    compile(source, module, "exec")
    assert not list((tmp_path / "repo/m/default").glob(".*.tmp")), "written under a temporary name"


def test_reinstalling_a_version_replaces_it_and_leaves_no_staging_folder(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    repository.install("m", "1", model_folder(tmp_path, "first"))
    repository.install("m", "1", model_folder(tmp_path, "second"))
    assert (tmp_path / "repo/m/1/model/MLmodel").read_text() == "marker: second\n"
    assert sorted(p.name for p in (tmp_path / "repo/m").iterdir()) == ["1"]


def test_a_failed_copy_leaves_the_installed_version_as_it_was(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    repository.install("m", "1", model_folder(tmp_path, "first"))
    with pytest.raises(FileNotFoundError):
        repository.install("m", "1", tmp_path / "no-such-model")
    assert (tmp_path / "repo/m/1/model/MLmodel").read_text() == "marker: first\n"
    assert sorted(p.name for p in (tmp_path / "repo/m").iterdir()) == ["1"]


def test_the_default_must_be_an_installed_version_and_removing_forgets_it(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match="version 3 is not in the model repository"):
        repository.set_default("m", "3")
    repository.install("m", "3", model_folder(tmp_path, "3"))
    repository.remove("m", "3")
    assert repository.installed_versions("m") == []


def test_smoke_inputs_follow_the_model_columns_and_check_the_spec_rows():
    example = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}
    assert v2_smoke_inputs(example, [[5, 6], [7, 8]])[1] == {"name": "b", "shape": [2, 1], "datatype": "FP64",
                                                            "data": [6.0, 8.0]}
    with pytest.raises(CheckFailed, match=r"must have 2 values .*a, b"):
        v2_smoke_inputs(example, [[1, 2, 3]])
    unnamed = v2_smoke_inputs({"dataframe_split": {"data": [[1, 2, 3]]}})
    assert unnamed == [{"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}]


@pytest.mark.parametrize(("outputs", "allowed", "value_range", "message"), [
    ([0, 1], None, None, "expected 3 predictions"),
    ([0, 1, 2], [0, 1], None, r"\[2\] are not among serving.smoke.allowed_outputs"),
    ([0.1, 0.5, 1.5], None, [0, 1], r"\[1.5\] are outside serving.smoke.output_range"),
    ([0.1, float("nan"), 0.2], None, [0, 1], "outside"),
])
def test_predictions_off_the_spec_fail_the_smoke_test(outputs, allowed, value_range, message):
    with pytest.raises(CheckFailed, match=message):
        check_v2_outputs({"outputs": [{"name": "predict", "data": outputs}]}, 3, allowed, value_range)


def test_predictions_within_the_spec_pass():
    assert check_v2_outputs({"outputs": [{"data": [0, 1, 1]}]}, 3, [0, 1], [0, 1]) == [0, 1, 1]
    with pytest.raises(CheckFailed, match="no outputs"):
        check_v2_outputs({"error": "x"}, 1, None, None)


def test_p99_is_the_nearest_rank_and_the_warm_up_call_is_not_counted():
    assert percentile(list(range(1, 101)), 0.99) == 99 and percentile([5.0], 0.99) == 5.0
    calls = []
    report = measure_latency(lambda: calls.append(1), 30, limit_ms=1000)
    assert len(calls) == 31 and report.requests == 30 and report.passed
    assert measure_latency(lambda: None, 10, limit_ms=-1).passed is False
