"""Evaluation on frozen backbone features: the evaluator interface (base.py) and its registry
(registry.py); weighted kNN (knn.py), the linear probe (linear.py) and SimSiam's linear protocol
(lincls.py), one evaluator each; the train loop's kNN monitor (online.py) and the evaluate command
(offline.py)."""
from effssl_jax.evaluate.base import Evaluator, Inputs, SplitFeatures
from effssl_jax.evaluate.features import extract_features, make_feature_fn
from effssl_jax.evaluate.knn import knn_accuracy, knn_classify, topk_accuracy
from effssl_jax.evaluate.linear import fit_logistic_regression, linear_probe
from effssl_jax.evaluate.offline import evaluate_workdir, main, read_eval_records
from effssl_jax.evaluate.registry import EVALUATORS, register

__all__ = ["Evaluator", "Inputs", "SplitFeatures", "extract_features", "make_feature_fn",
           "knn_accuracy", "knn_classify", "topk_accuracy", "fit_logistic_regression",
           "linear_probe", "evaluate_workdir", "main", "read_eval_records", "EVALUATORS",
           "register"]
