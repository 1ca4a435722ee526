"""Plumbing shared by the stage modules: resources, partitions, metadata, how a stage ends, versions."""
