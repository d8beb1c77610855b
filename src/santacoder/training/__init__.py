"""Training with Lightning: the task behind ``train.py`` (``task``) and the checks it runs first (``preflight``),
the LightningModule (``module``), every callback (``callbacks``), the checkpoint plugin (``checkpoint_io``),
signal handling (``signals``), FLOP counts and peaks for MFU (``flops``) and strategy factories
(``strategies``)."""
