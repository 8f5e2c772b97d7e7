"""What Ray Data runs on workers, in the order an image meets it: read (bytes), decode (pixels and
metadata), model (:class:`.model.RestoreModel`, an actor per model), write (encode with metadata, store
atomically, measure quality). The columns that flow between them are :class:`pipeline.rows.Col`.

The run's stop flag (:mod:`.stop`) lives here too: the driver raises it and hands its handle to the
stages as an argument; nothing in this package imports the driver's modules."""
