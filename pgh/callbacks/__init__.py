"""Lightning callbacks and plugins: PGH's progressive code refresh, atomic checkpoint writes, step
checkpoints, random generator states and training time in checkpoints, submitit's SIGTERM handling."""

from pgh.callbacks.checkpointing import AtomicCheckpointIO, StepCheckpoint
from pgh.callbacks.progressive import ProgressiveRounds
from pgh.callbacks.random_state import RandomState
from pgh.callbacks.submitit_signals import SubmititSignals, under_submitit
from pgh.callbacks.training_clock import TrainingClock

__all__ = [
    "AtomicCheckpointIO",
    "ProgressiveRounds",
    "RandomState",
    "StepCheckpoint",
    "SubmititSignals",
    "TrainingClock",
    "under_submitit",
]
