"""Evaluation on frozen backbone features: weighted kNN, the linear probe, the train loop's kNN
monitor (online.py) and the evaluate command (offline.py)."""
from effssl_jax.evaluate.features import extract_features, make_feature_fn
from effssl_jax.evaluate.knn import knn_accuracy, knn_classify, topk_accuracy
from effssl_jax.evaluate.linear import fit_logistic_regression, linear_probe
from effssl_jax.evaluate.offline import evaluate_workdir, main, read_eval_records

__all__ = ["extract_features", "make_feature_fn", "knn_accuracy", "knn_classify",
           "topk_accuracy", "fit_logistic_regression", "linear_probe", "evaluate_workdir", "main",
           "read_eval_records"]
