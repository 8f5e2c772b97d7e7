"""The batch restorer around :mod:`dgunet`: Ray Data jobs that restore image archives, and model training.

Three rooms, by where the code runs:

- the driver, here: the spec (:mod:`.spec`), the run (:mod:`.job`), its tally, report, lock, stats parts
  (:mod:`.stats`) and stop handling, and storage; planning what to restore has a room of its own
  (:mod:`.planning`);
- :mod:`.stages`: what Ray runs on workers for each image: read, decode, model, encode (with metadata),
  write, quality;
- :mod:`.training`: the training spec, loop (one process or Ray Train) and the evaluation against
  classical baselines.

The jobs import what they use from the module that holds it (``pipeline.spec.load_spec``,
``pipeline.run.job.run_restore``, ``pipeline.training.loop.fit``, ...); this package imports nothing, so that
importing one stage on a worker does not import the driver.
"""
