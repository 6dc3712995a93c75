"""A protocol added from outside the package: the toy evaluator of this file, registered here,
runs through `evaluate --protocol toy` (its option from `--option`) and gets its column in the
report, with no other module edited. Unknown protocols and options are one-line errors."""
import csv
import shutil

import numpy as np
import pytest

from effssl_jax import evaluate, report
from effssl_jax.errors import ConfigError
from effssl_jax.evaluate import registry


class Toy(evaluate.Evaluator):
    """The fraction of bank features whose first coordinate exceeds `threshold`."""
    name = "toy"
    options = {"threshold": 0.0}
    columns = (("toy_%", "toy (%)"),)

    def run(self, inputs):
        bank, queries = inputs.features()
        above = bank.features[:, 0] > self.settings["threshold"]
        return {"above": float(above.mean()), "bank": len(bank), "queries": len(queries),
                "resolution": inputs.resolution}

    @classmethod
    def cells(cls, result, config):
        return {"toy_%": result["above"]}


@pytest.fixture
def toy(monkeypatch):
    """registry.register(Toy) on a copy of the registry, undone after the test."""
    monkeypatch.setattr(registry, "EVALUATORS", dict(registry.EVALUATORS))
    registry.register(Toy)


def test_a_registered_evaluator_runs_in_evaluate_and_shows_in_report(toy, two_runs, tmp_path):
    workdir = str(shutil.copytree(two_runs[0], tmp_path / "run"))
    record = evaluate.main(["--workdir", workdir, "--protocol", "toy",
                            "--option", "toy.threshold=-1.0"])
    assert record["toy"] == {"above": 1.0, "bank": 64, "queries": 32, "resolution": 16}
    assert record["num_train"] == 64 and "knn" not in record and "linear" not in record
    record = evaluate.main(["--workdir", workdir, "--protocol", "toy"])  # threshold 0 again
    above = record["toy"]["above"]
    assert 0 < above < 1 and np.isclose(above * 64, round(above * 64))

    out = tmp_path / "report"
    report.main([workdir, "--out", str(out)])
    row = next(csv.DictReader(open(out / "results.csv")))
    assert row["toy_%"] == f"{100 * above:.2f}"  # the latest record's
    assert row["linear_top1_%"] == ""  # never run on this workdir
    assert "| toy (%) |" in (out / "results.md").read_text()


def test_unknown_protocols_and_options_are_one_line_errors(toy):
    with pytest.raises(ConfigError, match="unknown protocol 'nope'; valid: knn, linear, "
                                          "simsiam_linear, toy"):
        evaluate.evaluate_workdir("/nonexistent", ["nope"])
    with pytest.raises(ConfigError, match="toy has no option 'k'; valid: threshold"):
        registry.parse_options(["toy.k=3"])
    with pytest.raises(ConfigError, match="toy.threshold takes a float"):
        registry.parse_options(["toy.threshold=high"])
    with pytest.raises(ConfigError, match="is not NAME.KEY=VALUE"):
        registry.parse_options(["toy=1"])
    assert registry.parse_options(["toy.threshold=1", "knn.settings=((3, 0.5),)"]) == {
        "toy": {"threshold": 1.0}, "knn": {"settings": ((3, 0.5),)}}
