"""Hydra launchers for pgh sweeps through submitit (SLURM, or local subprocesses) whose jobs resume
after a requeue.

submitit requeues a job that SLURM preempts or that reaches its time limit, and reruns it with the
arguments its launcher's `checkpoint()` returns. hydra-submitit-launcher returns the job's original
overrides, so the rerun started training afresh (and `pgh-train` refuses to, beside the first
attempt's checkpoints). These launchers add `requeued=true`: `pgh-train` then continues from the
job's last checkpoint, or, when the first attempt wrote none, starts as configured. Hydra loads
launchers only from the `hydra_plugins` package, hence this module's home.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

REQUEUED_OVERRIDE = "requeued=true"


def overrides_that_resume(overrides: Sequence[str]) -> list[str]:
    """`overrides` plus requeued=true (replacing a `requeued` override of the user's, if any)."""
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "requeued"]
    return [*kept, REQUEUED_OVERRIDE]


class _ResumeOnRequeue:
    def checkpoint(self, sweep_overrides: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        """What submitit reruns after a preemption or a timeout: this job, resuming."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, overrides_that_resume(sweep_overrides), *args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        """The sweep, then away with the empty folder that submitit makes under the literal name of
        `submitit_folder` (`.submitit/%j`) beside the jobs' own (`.submitit/<job id>`)."""
        returns = super().launch(job_overrides, initial_job_idx)
        literal = Path(str(self.params["submitit_folder"]))
        if "%j" in literal.name and literal.is_dir() and not any(literal.iterdir()):
            literal.rmdir()
        return returns


class ResumingSlurmLauncher(_ResumeOnRequeue, SlurmLauncher):
    """hydra/launcher=slurm: one SLURM job per sweep job; a requeued job resumes from its last checkpoint."""


class ResumingLocalLauncher(_ResumeOnRequeue, LocalLauncher):
    """hydra/launcher=local: each sweep job in a local submitit subprocess, requeued and resumed as on SLURM."""
