"""Collect the example's own tests only where the example is installed (busguard's suite
installs it into a temporary target and runs them there; see tests/test_plugin_example.py)."""

from importlib import metadata

try:
    metadata.distribution("busguard-example-blocks")
    collect_ignore = []
except metadata.PackageNotFoundError:
    collect_ignore = ["tests"]
