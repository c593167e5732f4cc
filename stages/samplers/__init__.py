"""Batch samplers for unsupervised metric learning."""

from stages.samplers.knn import KnnBatchSampler, group_quotas

__all__ = ["KnnBatchSampler", "group_quotas"]
