"""Shared test set-up. The busguard fixtures come from the installed pytest11 plugin."""

from __future__ import annotations

import os

# w1thermsensor runs modprobe at import time unless told not to.
os.environ.setdefault("W1THERMSENSOR_NO_KERNEL_MODULE", "1")
