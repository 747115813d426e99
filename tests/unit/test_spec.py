"""The pipeline spec loader: the example loads; mistakes name the file, the field, what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from operators.spec import SpecError, load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "pipelines" / "breast_cancer" / "pipeline.yaml"


@pytest.fixture(autouse=True)
def state(monkeypatch):
    monkeypatch.setenv("FACTORY_STATE", "/var/lib/aifactory")


def write_variant(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text())
    change(raw)
    folder = tmp_path / "pipelines" / "variant"
    folder.mkdir(parents=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_example_spec_loads():
    spec = load_spec(EXAMPLE)
    assert spec.dag_id == "pipeline_breast_cancer"
    assert spec.training.resources.memory == "1G"
    assert spec.evaluation.thresholds["roc_auc"] == 0.95
    assert spec.contract_file.name == "breast_cancer.yaml" and spec.contract_file.exists()
    assert (spec.folder / spec.training.script).exists() and (spec.folder / spec.evaluation.script).exists()


@pytest.mark.parametrize(("change", "expected"), [
    (lambda raw: raw.update(surprise=1), r"spec: unknown key\(s\) surprise \(allowed: .*contract.*\)"),
    (lambda raw: raw["training"].update(scirpt="x.py"), r"spec.training: unknown key\(s\) scirpt"),
    (lambda raw: raw.pop("registry"), r"spec.registry: required field is missing"),
    (lambda raw: raw["training"]["resources"].update(cpus=-2), r"spec.training.resources.cpus: -2 must be"),
    (lambda raw: raw["training"]["resources"].update(memory="lots"), r"memory: 'lots' must look like"),
    (lambda raw: raw["training"].update(script="../../etc/passwd"), r"spec.training.script: .* inside the pipeline"),
    (lambda raw: raw["training"].update(script="/bin/train.py"), r"must be a path inside the pipeline folder"),
    (lambda raw: raw["dataset"].update(revision="v1; rm -rf /"), r"spec.dataset.revision: .* is not allowed"),
    (lambda raw: raw["registry"].update(model_name="a\nb"), r"spec.registry.model_name: .* is not allowed"),
    (lambda raw: raw.update(apiVersion="v0"), r"apiVersion: must be 'aifactory/v1'"),
    (lambda raw: raw["evaluation"]["thresholds"].update(roc_auc="high"), r"thresholds.roc_auc: 'high' must be"),
])
def test_mistakes_are_named(tmp_path, change, expected):
    path = write_variant(tmp_path, change)
    with pytest.raises(SpecError, match=expected) as error:
        load_spec(path)
    assert str(error.value).startswith(str(path))


def test_unset_environment_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_STATE")
    with pytest.raises(SpecError, match="environment variable FACTORY_STATE is not set"):
        load_spec(EXAMPLE)


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=f"{path}: not valid YAML"):
        load_spec(path)
