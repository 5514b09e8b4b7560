"""Training: the configuration, the data, the U-Net, the loop and writing the export.

``config`` (``TrainConfig``), ``data`` and ``inputs`` (sources and ``tf.data``
pipelines), ``model``, ``layers`` and ``folding`` (the network), ``distribute``
(MirroredStrategy), ``callbacks``, ``metrics`` and ``plots`` (what an epoch
records), ``loop`` (``train_and_evaluate``), ``export`` (writing the
export that :mod:`petseg.serving` reads) and ``evaluate`` (scoring an export
at the images' own resolution). Nothing here runs on a Beam worker.
"""
