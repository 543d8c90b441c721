"""`busguard bench`: measured speed of the runtime beside baselines measured in the same run.

One module per measurement (:mod:`~busguard.bench.scan` for scan determinism and resources,
:mod:`~busguard.bench.polling`, :mod:`~busguard.bench.northbound`,
:mod:`~busguard.bench.io_latency`, :mod:`~busguard.bench.restart`), helper processes for the
load (:mod:`~busguard.bench.meters`, :mod:`~busguard.bench.probes`,
:mod:`~busguard.bench.clients`, :mod:`~busguard.bench.pollers`), the measured runtime
(:mod:`~busguard.bench.target`) and :mod:`~busguard.bench.runner`. See docs/benchmarks.md.
"""
