"""The paper's Table 3 rows as one config: --config configs/ablation.py:ROW with ROW one of
  ca, f1clr, ca+ha, f1clr+sp, f1clr+ha, f1clr+sp+ha
CA rows use the baseline recipe (cosine annealing, 800 epochs); F1-CLR rows the efficient one
(480 epochs, t_w 80); +sp adds Super Progressive Learning, +ha Hard Augment. Every row augments
with the paper's setting (augment.recipe 'paper'), whatever the method."""
from configs import simsiam_baseline, simsiam_f1clr

ROWS = ("ca", "f1clr", "ca+ha", "f1clr+sp", "f1clr+ha", "f1clr+sp+ha")


def parse_row(row: str) -> list[str]:
    """The row's parts, e.g. ['f1clr', 'sp']; ValueError naming the valid rows if unknown."""
    if row.lower() not in ROWS:
        raise ValueError(f"unknown ablation row {row!r}; valid: {', '.join(ROWS)}")
    return row.lower().split("+")


def get_config(arg="f1clr+sp+ha"):
    row = (arg or "f1clr+sp+ha").lower()
    parts = parse_row(row)
    # The paper's settings, without SimSiam's code details (simsiam_baseline.simsiam_code), which
    # the paper does not name: the ablation's measured rows (results/) were trained so.
    c = (simsiam_f1clr if parts[0] == "f1clr" else simsiam_baseline).shared_config()
    c.name = f"ablation_{row.replace('+', '_')}"
    c.augment.recipe = "paper"  # the paper's one augmentation setting (methods/recipes.py)
    if "sp" not in parts:
        c.progressive.schedule = "fixed"
    c.hard_augment.enabled = "ha" in parts
    return c
