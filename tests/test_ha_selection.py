"""benchmarks/ha_selection.py: its agreement measures on known pair losses, and a run's
checkpoints scored end to end."""
import numpy as np
import pytest
from conftest import load_benchmark

ha_selection = load_benchmark("ha_selection")


def test_agreement_on_known_pair_losses():
    full = np.array([[0.1, 0.9], [0.5, 0.1], [0.9, 0.5]])  # 3 pairs x 2 samples
    same = ha_selection.agreement(full, full)
    assert same == {"top1": 1.0, "rank": 0.0, "spearman": 1.0}
    reversed_ = ha_selection.agreement(full, -full)  # picks the easiest pair at r
    assert reversed_ == {"top1": 0.0, "rank": 2.0, "spearman": -1.0}
    # Sample 0 picks its 2nd hardest pair (rank 1), sample 1 its hardest.
    mixed = ha_selection.agreement(full, np.array([[0.1, 0.9], [0.9, 0.1], [0.5, 0.5]]))
    assert mixed["top1"] == 0.5 and mixed["rank"] == 0.5
    assert mixed["spearman"] == pytest.approx((0.5 + 1.0) / 2)  # ranks (0,1,2) vs (0,2,1): 0.5


def test_pairings_on_known_pair_losses():
    """n = 3: pairs (0,1), (0,2), (1,2); (0,1) and (1,2) have one view of each recipe."""
    full = np.array([[0.2, 0.1], [0.9, 0.8], [0.5, 0.3]])  # (0,2) hardest in both samples
    small = np.array([[0.1, 0.9], [0.8, 0.1], [0.3, 0.2]])  # picks (0,2), then (0,1)
    got = ha_selection.pairings(full, small, 3)
    assert got["same_recipe"] == 0.5
    # Cross choices: sample 0 (1,2), 2nd hardest of all at r; sample 1 (0,1), 3rd.
    assert got["cross_rank"] == 1.5
    assert got["cross_top1"] == 0.5  # (1,2) is sample 0's hardest cross pair; (0,1) is not 1's


def test_selection_of_a_finished_runs_checkpoints(two_runs, tmp_path):
    """All kept checkpoints and the initial weights, every fraction: the full resolution agrees
    with itself, and every measure lies in its range."""
    rows = ha_selection.measure(two_runs[0], [], [0.5, 1.0], num_views=3, batch_size=8,
                                batches=1, init=True)
    names = {row["checkpoint"] for row in rows}
    assert "init" in names and len(names) >= 2
    for row in rows:
        assert 0 <= row["top1"] <= 1 and 0 <= row["rank"] <= 2 and -1 <= row["spearman"] <= 1
        assert 0 <= row["same_recipe"] <= 1 and 0 <= row["cross_rank"] <= 2
        if row["r_sel"] == row["r"]:
            assert (row["top1"], row["rank"]) == (1.0, 0.0)
    ha_selection.plot(rows, str(tmp_path / "selection.png"), 3)
    assert (tmp_path / "selection.png").stat().st_size > 0
