"""Collect the example's own tests only where the example is installed (busguard's suite
installs it into a temporary target and runs them there; see tests/test_plugin_example.py)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("busguard_example") else ["tests"]
