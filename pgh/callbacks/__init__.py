"""Lightning callbacks and plugins: PGH's progressive code refresh, atomic checkpoint writes."""

from pgh.callbacks.checkpointing import AtomicCheckpointIO
from pgh.callbacks.progressive import ProgressiveRounds

__all__ = ["AtomicCheckpointIO", "ProgressiveRounds"]
