"""Operator and developer tooling: the CLI, the demo network, benchmarks, load and drift harnesses.

Tools may import libs and services; nothing under libs or services imports tools.
"""
