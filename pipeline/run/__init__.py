"""The driver's room: what runs on the machine that submits a restore job, never in a Ray worker.

The run itself (:mod:`~pipeline.run.job`: plan, lock, the Ray Data pipeline, the stats and summary), the
command line (:mod:`~pipeline.run.cli`), the dry run, the output lock, the preflight checks, Ray's set-up,
graceful shutdown, the tally, summary, report, metrics, cost estimate, adoption and compaction of stats.
Modules here import the floor below (:mod:`pipeline.spec`, :mod:`pipeline.storage`, :mod:`pipeline.rows`,
:mod:`pipeline.stats`, the stages and planning); nothing below imports them.
"""
