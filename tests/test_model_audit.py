"""The model egress audit on real MLflow models (scikit-learn, LightGBM), and through the CLI:
`package --dry-run` and `register` refuse a model that carries training rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness.tiny_models import training_frame
from training import cli, model_audit
from training.src.edge_train import model_rows


def copy(model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "outputs" / "model"
    shutil.copytree(model, target)
    return target


@pytest.mark.parametrize(
    ("name", "kind", "where"),
    [
        ("knn", "sample-attribute", "model.steps[1][1]._fit_X"),  # inside a pipeline
        ("svm", "sample-attribute", "model.support_vectors_"),
        ("with-example", "input-example", "input_example.json"),
    ],
)
def test_models_that_keep_training_rows_are_found(tiny_models, name, kind, where) -> None:
    report = model_audit.audit(tiny_models[name])
    assert (kind, where) in {(f.kind, f.where) for f in report.findings}
    assert not report.passed
    with pytest.raises(model_audit.ModelEgressRefused, match="--allow-model-egress REASON"):
        model_audit.check(report, None)


@pytest.mark.parametrize("name", ["linear", "boosted", "lightgbm", "regressor", "multiclass"])
def test_models_that_keep_no_rows_pass_even_compared_with_the_training_data(tiny_models, name) -> None:
    x, _, _ = training_frame()
    report = model_audit.audit(tiny_models[name], training_rows=x.to_numpy())
    assert report.findings == () and report.rows_checked
    assert report.tags() == {"egress_audit": "passed"}
    model_audit.check(report, None)


def test_a_data_file_in_the_model_folder_is_found(tiny_models, tmp_path) -> None:
    model = copy(tiny_models["linear"], tmp_path)
    (model / "extra").mkdir()
    (model / "extra" / "sample.CSV").write_text("f0,f1\n1,2\n")
    report = model_audit.audit(model, load=False)
    assert [(f.kind, f.where) for f in report.findings] == [("data-file", "extra/sample.CSV")]


def test_a_wide_array_in_the_model_is_found_by_its_shape(tiny_models) -> None:
    import mlflow.sklearn

    x, _, _ = training_frame()
    estimator = mlflow.sklearn.load_model(str(tiny_models["linear"]))
    estimator.kept_for_later = {"rows": x.to_numpy()[:40] * 2.0}  # not verbatim: found by its shape
    findings, _ = model_audit._model_findings(estimator, len(x.columns), model_audit.ROW_THRESHOLD)
    assert [(f.kind, f.where) for f in findings] == [("data-array", "model.kept_for_later['rows']")]
    estimator.kept_for_later = {"rows": x.to_numpy()[: model_audit.ROW_THRESHOLD]}  # at the threshold: not
    assert model_audit._model_findings(estimator, len(x.columns), model_audit.ROW_THRESHOLD)[0] == []


def test_a_planted_training_row_is_found_by_its_hash(tiny_models, tmp_path) -> None:
    x, _, _ = training_frame()
    model = copy(tiny_models["linear"], tmp_path)
    planted = x.to_numpy()[17].tolist()
    (model / "notes.json").write_text(json.dumps({"calibration": {"reference": planted}}))
    report = model_audit.audit(model, training_rows=x.to_numpy())
    assert [(f.kind, f.where, f.detail) for f in report.findings] == [
        ("training-rows", "notes.json", "1 training row(s) verbatim")
    ]
    # A value off by one in the last place is another row.
    planted[3] = float(__import__("numpy").nextafter(planted[3], 1e9))
    (model / "notes.json").write_text(json.dumps({"calibration": {"reference": planted}}))
    assert model_audit.audit(model, training_rows=x.to_numpy()).findings == ()


def test_the_jobs_row_check_finds_a_row_kept_in_an_attribute_and_writes_counts_only(tiny_models, tmp_path) -> None:
    import mlflow.sklearn

    x, _, _ = training_frame()
    estimator = mlflow.sklearn.load_model(str(tiny_models["linear"]))
    estimator.reference_ = x.to_numpy()[[3, 5]]  # two rows, under the width threshold
    estimator.anchor_ = x.to_numpy()[9]  # one row, as a 1-D array
    model = copy(tiny_models["linear"], tmp_path)
    report = model_rows.check(estimator, model, x.to_numpy(), model.parent)
    assert report["rows_compared"] == 240
    assert sorted(report["findings"], key=str) == [{"where": "model.anchor_", "rows": 1},
                                                   {"where": "model.reference_", "rows": 2}]  # fmt: skip
    written = (model.parent / "egress_rows.json").read_text()
    assert json.loads(written) == report and str(x.iloc[3, 0]) not in written
    # register and package read it beside the model and refuse.
    audit = model_audit.audit(model, row_check=model_audit.row_check_beside(model))
    assert sorted(f.where for f in audit.findings) == ["model.anchor_", "model.reference_"] and audit.rows_checked


def test_an_override_is_recorded_with_its_reason(tiny_models) -> None:
    report = model_audit.audit(tiny_models["svm"])
    model_audit.check(report, "support vectors are synthetic, see ticket 12")  # no raise
    tags = report.tags("support vectors are synthetic, see ticket 12")
    assert tags["egress_audit"] == "allowed: support vectors are synthetic, see ticket 12"
    assert "support_vectors_" in json.loads(tags["egress_findings"])[0]


def test_a_model_that_cannot_be_loaded_is_not_passed(tiny_models, tmp_path) -> None:
    model = copy(tiny_models["linear"], tmp_path)
    (model / "model.skops").write_bytes(b"not a skops file")
    report = model_audit.audit(model)
    assert [f.kind for f in report.findings] == ["not-inspected"]


# --- through the CLI --------------------------------------------------------------------------------


def package_dry_run(model: Path, tmp_path: Path, *extra: str) -> int:
    from tests.test_image_build import stack_outputs

    outputs = tmp_path / "stack.json"
    outputs.write_text(json.dumps(stack_outputs()))
    argv = ["package", "--outputs", str(outputs), "--model", "m", "--version", "1", "--model-dir", str(model)]
    return cli.main([*argv, "--data-fingerprint", "f" * 64, "--dry-run", *extra])


def test_package_dry_run_refuses_a_knn_and_names_the_attribute(tiny_models, tmp_path, capsys) -> None:
    assert package_dry_run(copy(tiny_models["knn"], tmp_path), tmp_path) == cli.USAGE
    captured = capsys.readouterr()
    assert json.loads(captured.out)["egress_audit"] == "refused"
    assert "error: the model may carry training rows: model.steps[1][1]._fit_X" in captured.err


def test_package_dry_run_with_a_reason_lists_the_context_and_sends_nothing(tiny_models, tmp_path, capsys) -> None:
    code = package_dry_run(copy(tiny_models["svm"], tmp_path), tmp_path, "--allow-model-egress", "synthetic data")
    assert code == cli.OK
    out = capsys.readouterr().out
    report, _, context = out.partition("}\n")
    assert json.loads(report + "}")["egress_audit"] == "allowed: synthetic data"
    names = json.loads(context)["context"]
    assert names[:4] == ["Dockerfile", "requirements.txt", "score.py", "server_worker.py"]
    assert "model/MLmodel" in names and "model/requirements.txt" in names


def test_package_reads_the_row_check_the_training_run_left(tiny_models, tmp_path, capsys) -> None:
    model = copy(tiny_models["linear"], tmp_path)
    (model.parent / "egress_rows.json").write_text(json.dumps({"rows_compared": 9, "findings": [
        {"where": "model.coef_", "rows": 1}]}))  # fmt: skip
    assert package_dry_run(model, tmp_path) == cli.USAGE
    assert "model.coef_: 1 training row(s) verbatim (in the job)" in capsys.readouterr().err


@pytest.mark.parametrize("reason", ["", " ", "two\nlines", "x" * 257])
def test_an_override_needs_a_one_line_reason(tiny_models, tmp_path, reason, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        package_dry_run(tiny_models["svm"], tmp_path, "--allow-model-egress", reason)
    assert exited.value.code == cli.USAGE
    assert "one line of 1 to 256 characters" in capsys.readouterr().err


def test_row_hashes_see_values_not_spellings() -> None:
    assert model_rows.row_hashes([[0.0, 1]]) == model_rows.row_hashes([[-0.0, 1.0]])  # one value, two bit patterns
    assert len(model_rows.row_hashes([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]])) == 2
    with pytest.raises(ValueError, match="must be 2-D"):
        model_rows.row_hashes([1.0, 2.0])
