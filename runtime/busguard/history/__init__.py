"""On-box history: 1 s samples for the last hour (RAM) and 1 min min/avg/max for 30 days
(flash), in two fixed-size ring files (docs/history.md).

Read it with :func:`open_reader` (``busguard history``, the web page's trends); the
``[history]`` publisher (:mod:`busguard.history.publisher`) records it from the map snapshot.
"""

from busguard.history.reader import HistoryReader, Sample, open_reader

__all__ = ["HistoryReader", "Sample", "open_reader"]
