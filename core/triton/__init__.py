"""Triton Inference Server: container model repositories (repo), a local server (PyTriton: serve, server), and load
sweeps (loadtest). The CLI commands `triton-repo`, `serve` and `sweep` are declared in core.cli."""
