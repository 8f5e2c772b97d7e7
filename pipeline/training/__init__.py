"""Training and judging models: the training spec (:mod:`.spec`), the loop (:mod:`.loop`: one process,
or data-parallel on Ray Train) and the evaluation against classical baselines (:mod:`.evaluate`, no Ray)."""
