"""Datasets, domain pairs and the index streams that feed the loop."""
