"""The early stalls of SimCLR in this folder's records (run from the repository root):
    python results/vs_torch_training/stalls.py"""
import json
R = "results/vs_torch_training"
print("| seed | library: mean loss, first 60 steps | library: steps with gradient norm < 0.05 | PyTorch: mean loss, first 60 steps |")
print("|---|---|---|---|")
for s in (2, 3, 4, 5):
    jax = json.load(open(f"{R}/first60/simclr_jax_s{s}.json"))["loss"][0]
    rows = [json.loads(l) for l in open(f"{R}/first60/simclr_jax_s{s}/metrics.jsonl")]
    stalled = sum(1 for r in rows if "loss" in r and r["grad_norm"] < 0.05)
    torch = json.load(open(f"{R}/first60/simclr_torch_s{s}.json"))["loss"][0]
    print(f"| {s} | {jax:.4f} | {stalled} | {torch:.4f} |")
for s in (0, 1):
    rows = [json.loads(l) for l in open(f"{R}/simclr_jax_s{s}/metrics.jsonl")]
    rows = [r for r in rows if "loss" in r]
    stalled = [r["step"] for r in rows if r["grad_norm"] < 0.05]
    print(f"full run, library seed {s}: {len(stalled)} steps with gradient norm < 0.05"
          + (f" (steps {stalled[0]}-{stalled[-1]}; loss at ln(255) = 5.541)" if stalled else ""))
