"""Weighted kNN against a brute-force reference, the linear probe on separable and random
features, offline evaluation of a workdir; SimSiam's loss on hand-computed values."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from runs import tiny_run

from effssl_jax import evaluate
from effssl_jax.methods.base import negative_cosine


def brute_force_knn(train, train_labels, queries, k, t, num_classes):
    out = []
    for q in queries:
        sims = [float(np.dot(q, x)) for x in train]
        order = sorted(range(len(train)), key=lambda i: -sims[i])[:k]
        scores = [0.0] * num_classes
        for i in order:
            scores[train_labels[i]] += np.exp(sims[i] / t)
        out.append(scores)
    return np.array(out)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_equals_brute_force():
    rng = np.random.default_rng(0)
    train, queries = unit(rng.normal(size=(300, 16))), unit(rng.normal(size=(50, 16)))
    labels = rng.integers(0, 7, 300)
    scores = evaluate.knn_classify(train, labels, queries, k=20, temperature=0.1,
                                   num_classes=7, chunk=16)
    ref = brute_force_knn(train, labels, queries, 20, 0.1, 7)
    np.testing.assert_allclose(scores, ref, rtol=2e-4)
    assert (scores.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("k", [38, 50, 301])
def test_knn_on_a_padded_bank_with_negative_similarities_equals_brute_force(k):
    """301 bank rows on 8 devices: 38 a device, the last one holding 3 padding rows (zero
    features, similarity 0). Every query is anti-aligned with the bank, so all its similarities
    are negative and an unmasked padding row would outrank every real one; k is at least one
    device's share, so each device offers all its rows (padding included) to the merged top k."""
    from jax.sharding import Mesh
    rng = np.random.default_rng(4)
    direction = unit(rng.normal(size=(1, 16)))
    train = unit(8 * direction + rng.normal(size=(301, 16)))
    queries = unit(-8 * direction + rng.normal(size=(37, 16)))
    assert (queries @ train.T < 0).all()
    labels = rng.integers(0, 7, 301)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    assert mesh.size == 8 and 301 % mesh.size
    scores = evaluate.knn_classify(train, labels, queries, k=k, temperature=0.1, num_classes=7,
                                   chunk=16, mesh=mesh)
    np.testing.assert_allclose(scores, brute_force_knn(train, labels, queries, k, 0.1, 7),
                               rtol=2e-4, atol=1e-30)


def test_knn_accuracy_on_clustered_features():
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(5, 32)))
    labels = rng.integers(0, 5, 500)
    feats = unit(centres[labels] + 0.05 * rng.normal(size=(500, 32)))
    assert evaluate.knn_accuracy(feats[:400], labels[:400], feats[400:], labels[400:], k=200) == 1.0
    shuffled = rng.permutation(labels[:400])
    acc = evaluate.knn_accuracy(feats[:400], shuffled, feats[400:], labels[400:], k=200)
    assert acc < 0.5  # labels unrelated to the features: near chance (0.2)


def test_simsiam_negative_cosine_hand_values():
    p = jnp.array([[1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    z = jnp.array([[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(negative_cosine(p, z), [0.0, -1.0, 1.0], atol=1e-6)
    p, z = jnp.array([[1.0, 2.0]]), jnp.array([[2.0, 1.0]])
    assert float(negative_cosine(p, z)[0]) == pytest.approx(-4 / 5)


def test_topk_accuracy_by_hand():
    scores = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    acc = evaluate.topk_accuracy(scores, np.array([2, 0, 0]), ks=(1, 2))
    assert acc == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}


def test_knn_top5_equals_brute_force():
    rng = np.random.default_rng(2)
    train, queries = unit(rng.normal(size=(200, 8))), unit(rng.normal(size=(40, 8)))
    labels, query_labels = rng.integers(0, 10, 200), rng.integers(0, 10, 40)
    scores = evaluate.knn_classify(train, labels, queries, k=20, temperature=0.07, num_classes=10)
    ref = brute_force_knn(train, labels, queries, 20, 0.07, 10)
    top5 = np.mean([query_labels[i] in np.argsort(-ref[i])[:5] for i in range(40)])
    assert evaluate.topk_accuracy(scores, query_labels)["top5"] == pytest.approx(top5)


def test_linear_probe_separable_features_reach_100_percent():
    rng = np.random.default_rng(3)
    # Five classes, each a Gaussian blob around its own centre: linearly separable with margin.
    centres = 6.0 * unit(rng.normal(size=(5, 16)))
    labels = rng.integers(0, 5, 1200)
    feats = centres[labels] + 0.5 * rng.normal(size=(1200, 16))
    r = evaluate.linear_probe(feats[:1000], labels[:1000], feats[1000:], labels[1000:], 5)
    assert r["top1"] >= 0.99 and r["top5"] == 1.0 and r["train_top1"] >= 0.99
    assert r["protocol"]["l2"] in r["protocol"]["l2_grid"]
    assert set(r["protocol"]["val_top1_by_l2"]) == {str(v) for v in r["protocol"]["l2_grid"]}


def test_linear_probe_random_features_at_chance():
    rng = np.random.default_rng(4)
    feats, labels = rng.normal(size=(3000, 32)), rng.integers(0, 10, 3000)
    r = evaluate.linear_probe(feats[:2000], labels[:2000], feats[2000:], labels[2000:], 10)
    assert abs(r["top1"] - 0.1) < 0.04  # chance; 1000 test samples: std ~0.01
    assert abs(r["top5"] - 0.5) < 0.06


def test_minibatch_sgd_probe_reaches_the_lbfgs_optimum_on_8_devices():
    from jax.sharding import Mesh

    from effssl_jax.evaluate import linear
    rng = np.random.default_rng(5)
    centres = 1.5 * unit(rng.normal(size=(6, 16)))  # overlapping blobs: ~75% accuracy
    labels = rng.integers(0, 6, 3000)
    feats = (centres[labels] + 0.7 * rng.normal(size=(3000, 16))).astype(np.float32)
    x, y = (feats - feats.mean(0)) / feats.std(0), labels.astype(np.int32)
    _, _, exact = linear.fit_logistic_regression(x, y, 1e-3, num_classes=6)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    _, steps, sgd = linear.fit_logistic_regression_sgd(x, y, 1e-3, 6, mesh=mesh)
    assert steps == 30 * (3000 // 256) and float(exact) <= sgd <= float(exact) + 2e-3
    probes = {o: evaluate.linear_probe(feats[:2000], labels[:2000], feats[2000:], labels[2000:],
                                       6, optimizer=o) for o in ("lbfgs", "sgd")}
    assert 0.6 < probes["lbfgs"]["top1"] < 0.9
    assert abs(probes["sgd"]["top1"] - probes["lbfgs"]["top1"]) <= 0.01
    assert probes["sgd"]["protocol"]["optimizer"].startswith("minibatch SGD")


def test_offline_evaluation_of_a_workdir(tmp_path):
    """The offline kNN of the last checkpoint (config's k and T) equals the train loop's online
    kNN, both protocols land in eval.json, and records are appended."""
    workdir = tiny_run(tmp_path / "run", epochs=1)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    record = evaluate.main(["--workdir", workdir])
    assert record["checkpoint_step"] == summary["steps"]
    knn = {(r["k"], r["temperature"]): r for r in record["knn"]}
    assert set(knn) == {(5, 0.1), (20, 0.07)}
    assert knn[(5, 0.1)]["top1"] == pytest.approx(summary["knn_top1"])
    assert 0 <= record["linear"]["top1"] <= record["linear"]["top5"] <= 1
    assert record["linear"]["protocol"]["optimizer"].startswith("full-batch L-BFGS")
    evaluate.main(["--workdir", workdir, "--protocol=knn", "--option=knn.settings=((3, 0.5),)"])
    records = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(records) == 2 and "linear" not in records[1]
    assert [(r["k"], r["temperature"]) for r in records[1]["knn"]] == [(3, 0.5)]
    # SimSiam's linear protocol end to end: LARS on augmented images of the frozen backbone.
    r = evaluate.main(["--workdir", workdir, "--protocol=simsiam_linear",
                       "--option=simsiam_linear.epochs=2", "--option=simsiam_linear.batch_size=16"]
                      )["simsiam_linear"]
    assert 0 <= r["top1"] <= r["top5"] <= 1 and np.isfinite(r["final_loss"])
    p = r["protocol"]
    assert (p["batch_size"], p["epochs"], p["steps"]) == (16, 2, 2 * (64 // 16))
    assert p["lr"] == pytest.approx(0.02 * 16 / 256) and p["weight_decay"] == 0.0


def _folder(root, n=23, classes=3):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(n):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), np.uint8)).save(d / f"{i}.png")
    return root


def test_streamed_splits_are_the_loaded_ones_in_host_shares(tmp_path):
    from effssl_jax import config_schema
    from effssl_jax.data import pipeline
    c = config_schema.default_config()
    c.dataset = f"folder:{_folder(tmp_path)}"
    crop = pipeline.eval_transform(c, 16)
    whole = pipeline.load_split(c, "bank", crop)
    parts = []
    for p in range(3):  # three hosts: contiguous, disjoint shares, decoded 5 at a time
        chunks, n, classes = pipeline.stream_split(c, "bank", 16, p, 3, chunk=5)
        got = list(chunks)
        assert classes == whole.num_classes == 3 and max(len(im) for im, _ in got) == 5
        parts.append((np.concatenate([im for im, _ in got]), np.concatenate([lb for _, lb in got])))
        assert len(parts[-1][0]) == n
    np.testing.assert_array_equal(np.concatenate([im for im, _ in parts]), whole.images)
    np.testing.assert_array_equal(np.concatenate([lb for _, lb in parts]), whole.labels)
    subset = pipeline.load_split(c, "bank", crop, limit=7)
    again = pipeline.load_split(c, "bank", crop, limit=7)
    assert len(subset) == 7 and (subset.images == again.images).all()
    rows = [np.flatnonzero((whole.images == im).all(axis=(1, 2, 3)))[0] for im in subset.images]
    assert rows == sorted(set(rows))  # a fixed subset of distinct examples, in split order


def test_streamed_features_on_8_devices_equal_the_in_memory_ones():
    from tiny import tiny_config, tiny_experiment

    from effssl_jax.evaluate.features import extract_features, make_feature_fn, stream_features
    exp = tiny_experiment(tiny_config(), jax.devices())
    state = exp.init(jax.random.key(0))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    fn = make_feature_fn(exp.method.net, exp.mesh, jnp.float32)
    images = np.random.default_rng(1).integers(0, 256, (45, 16, 16, 3), np.uint8)
    labels = np.arange(45) % 4
    chunks = ((images[i:i + 7], labels[i:i + 7]) for i in range(0, 45, 7))
    x, lb = stream_features(fn, variables, chunks, 45, 16, 16, exp.mesh)  # batches of 16: 3
    np.testing.assert_array_equal(lb, labels)
    np.testing.assert_allclose(x, extract_features(fn, variables, images, 16, exp.mesh),
                               atol=1e-6)
