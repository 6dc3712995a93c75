"""Predicted cost of recipes before training: eq. 9's M of the resolution plan next to the FLOP
speed-up from each bucket's train step (XLA cost analysis, steps x FLOPs per step), and the cost in
the paper's convention (costs.py: views x 2 x forward + target forwards) with its speed-up.

  python benchmarks/predicted_speedup.py configs/simsiam_baseline.py configs/simsiam_f1clr.py \
      configs/ablation.py:f1clr+sp [--num_examples 9469]
The first config is the baseline.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from effssl_jax import config_schema, costs, experiment, step  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--num_examples", type=int, default=9469, help="Imagenette train: 9469")
    parser.add_argument("--override", action="append", default=[],
                        help="key=value applied to every config, e.g. model.arch=resnet18")
    args = parser.parse_args()
    rows, base = [], None
    for path in args.configs:
        config = config_schema.from_recipe(path)
        for item in args.override:
            key, value = item.split("=", 1)
            node = config
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = type(node[leaf])(eval(value) if not isinstance(node[leaf], str) else value)
        one_device = step.data_mesh(jax.devices()[:1])  # XLA's count of the single-device step
        result = costs.plan_flops(experiment.build(config, args.num_examples, one_device,
                                                   jnp.float32))
        base = base or result
        rows.append((path, result))
    print(f"{'config':34s} {'epochs':>6s} {'PFLOPs':>9s} {'FLOP speed-up':>13s} "
          f"{'paper PF':>9s} {'speed-up':>8s} {'XLA/paper':>9s} {'eq.9 M':>7s}  "
          "GFLOP/step by resolution")
    for path, r in rows:
        per = ", ".join(f"{k}px {v:.0f}" for k, v in r["gflops_per_step"].items())
        print(f"{path:34s} {r['plan'].total_steps / r['plan'].steps_per_epoch:6.0f} "
              f"{r['total_pflops']:9.1f} {base['total_pflops'] / r['total_pflops']:12.2f}x "
              f"{r['pflops_paper']:9.1f} {base['pflops_paper'] / r['pflops_paper']:7.2f}x "
              f"{r['total_pflops'] / r['pflops_paper']:9.2f} "
              f"{r['speedup'].predicted:6.2f}x  {per}")


if __name__ == "__main__":
    main()
