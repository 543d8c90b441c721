"""`busguard bench`: measured speed of the runtime beside baselines measured in the same run.

One module per measurement (:mod:`~busguard_bench.scan` for scan determinism and resources,
:mod:`~busguard_bench.polling`, :mod:`~busguard_bench.northbound`,
:mod:`~busguard_bench.io_latency`, :mod:`~busguard_bench.restart`), helper processes for the
load (:mod:`~busguard_bench.meters`, :mod:`~busguard_bench.probes`,
:mod:`~busguard_bench.clients`, :mod:`~busguard_bench.pollers`), the measured runtime
(:mod:`~busguard_bench.target`) and :mod:`~busguard_bench.runner`. See docs/benchmarks.md.
"""
