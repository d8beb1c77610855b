"""Every Lightning callback of this project, one per file: ``RunCheckpoint`` (when checkpoints are written),
``NonFiniteLossGuard`` (NaN/inf losses and weights), ``LossScaleMonitor`` (fp16 loss scale),
``SantaCoderThroughputMonitor`` (tokens/s and MFU), ``MixtureMonitor`` (tokens and epochs per source of a data
mixture) and ``StopOnSignal`` (a signal stops every rank at one batch boundary)."""

from santacoder.training.callbacks.loss_scale import LossScaleMonitor
from santacoder.training.callbacks.mixture_monitor import MixtureMonitor
from santacoder.training.callbacks.nonfinite_loss import NonFiniteLossError, NonFiniteLossGuard
from santacoder.training.callbacks.run_checkpoint import RunCheckpoint
from santacoder.training.callbacks.stop_on_signal import StopOnSignal
from santacoder.training.callbacks.throughput import SantaCoderThroughputMonitor

__all__ = [
    "LossScaleMonitor",
    "MixtureMonitor",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "RunCheckpoint",
    "SantaCoderThroughputMonitor",
    "StopOnSignal",
]
