"""The paper's Table 3 rows as one config: --config configs/ablation.py:ROW with ROW one of
  ca, f1clr, ca+ha, f1clr+sp, f1clr+ha, f1clr+sp+ha
CA rows use the baseline recipe (cosine annealing, 800 epochs); F1-CLR rows the efficient one
(480 epochs, t_w 80); +sp adds Super Progressive Learning, +ha Hard Augment. Every row augments
with the paper's setting (augment.recipe 'paper'), whatever the method."""
from configs import common

ROWS = common.ABLATION_ROWS


def get_config(arg="f1clr+sp+ha"):
    return common.ablation_row(arg or "f1clr+sp+ha")
