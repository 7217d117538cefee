"""Prompt sets: sources, normalization, dedup and the shard files synthesis is partitioned by."""
