"""The progressive rounds of PGH: at the end of every round, re-encode each training image with H
and make those codes the GAN's condition for the next round.

Each round also logs the bit change rate, evaluates mAP@all on the protocol's queries/database with
H's codes, writes `rounds.csv` (round, bit_change, map_all, map_at_<eval.map_k>, and the database
codes' distinct codes and mean |bit correlation|; round 0 = the initial shallow codes) and saves a
grid of real training images above G's images for the same codes (also sent to W&B / TensorBoard,
as are the round's metrics).
Training stops early once fewer than `converge_bit_change` of the bits changed. With
`vote_neighbors` = k > 0 (ours), H's new codes are first refined by a neighbourhood vote: each
becomes the bitwise majority of its own and its k nearest training images' codes, nearest in the
initial features (`train_features`, the `features` group), `vote_iterations` times. With
`lr_schedule="cosine"` (ours) every optimizer's learning rate follows a half cosine inside each round,
batch by batch, from its configured value down to `lr_min_factor` times it at the round's end, and
starts again at the next round (so each refresh codes with a settled H); `"cosine_after_warmup"` holds
the configured rates through the module's `warmup_epochs` and runs the round's half cosine from the
warm-up's end, so the warm-up does not use up round 1's high rates. Under DDP every rank encodes a
shard of the training set and the codes are all-gathered, so all ranks agree.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torchvision.utils import make_grid, save_image

from pgh.callbacks.checkpointing import reached_last_batch
from pgh.hashing.vote import majority_vote, own_neighbors
from pgh.io import atomic_path, write_text
from pgh.logging_utils import log_image, logger_step
from pgh.retrieval import code_statistics, evaluate_packed, pack_codes
from pgh.retrieval.metrics import EVAL_DEFAULTS

log = logging.getLogger(__name__)

CODE_COLUMNS = ("db_distinct_codes", "db_bit_correlation")  # rounds.csv's code statistics
LR_SCHEDULES = ("constant", "cosine", "cosine_after_warmup")


def code_columns(metrics: dict) -> dict[str, float]:
    """rounds.csv's code statistics from `db_`-prefixed ones; NaN where there are none (a correlation
    with fewer than two varying bits, a row from a checkpoint that predates them)."""
    return {k: math.nan if metrics.get(k) is None else float(metrics[k]) for k in CODE_COLUMNS}


def check_lr_schedule(lr_schedule: str, lr_min_factor: float) -> None:
    """The round's learning-rate settings, checked by the callback and by pgh-train before any work."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    if isinstance(lr_min_factor, bool) or not isinstance(lr_min_factor, (int, float)) or not 0 <= lr_min_factor <= 1:
        raise ValueError(f"lr_min_factor must be a fraction in [0, 1] of the learning rates, got {lr_min_factor!r}")


def check_round_settings(
    epochs_per_round: int = 1,
    converge_bit_change: float = 0.0,
    grid_size: int = 8,
    vote_neighbors: int = 0,
    vote_iterations: int = 1,
    lr_schedule: str = "constant",
    lr_min_factor: float = 0.0,
) -> None:
    """The round settings that do not depend on the data, checked by the callback and by pgh-train
    before any work (a float such as vote_neighbors=2.0 failed only at the first round's end)."""
    for name, value, smallest, what in (
        ("epochs_per_round", epochs_per_round, 1, "epochs"),
        ("grid_size", grid_size, 1, "images a row"),
        ("vote_neighbors", vote_neighbors, 0, "training images (0: no vote)"),
        ("vote_iterations", vote_iterations, 1, "votes a refresh"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ValueError(f"{name}={value!r} must be a whole number >= {smallest} of {what}")
    if vote_neighbors % 2:
        raise ValueError(
            f"vote_neighbors={vote_neighbors} is odd: with the image's own code that is an even number of voters, "
            f"and a tie would set the bit to 1; use an even k ({vote_neighbors - 1} or {vote_neighbors + 1})"
        )
    bad_fraction = isinstance(converge_bit_change, bool) or not isinstance(converge_bit_change, (int, float))
    if bad_fraction or not 0.0 <= converge_bit_change <= 1.0:
        raise ValueError(f"converge_bit_change must be a fraction in [0, 1], got {converge_bit_change!r}")
    check_lr_schedule(lr_schedule, lr_min_factor)


def check_same_scoring(saved: dict[str, Any], eval_kwargs: dict[str, Any]) -> None:
    """Refuse to continue rounds (ProgressiveRounds' checkpointed state `saved`) that were scored with
    another eval.map_k or tie order than `eval_kwargs`: rounds.csv would mix two scorings. A
    checkpoint written before the state recorded its scoring names only its mAP@K column."""
    rows, map_k_key = list(saved["rows"]), f"map_at_{eval_kwargs.get('map_k', 1000)}"
    if saved.get("eval") is not None:
        scored, now = ({**EVAL_DEFAULTS, **e} for e in (saved["eval"], eval_kwargs))
        differing = [f"{k}={scored[k]!r} there, {now[k]!r} here" for k in ("map_k", "tie_break") if scored[k] != now[k]]
    elif rows and map_k_key not in rows[0]:
        differing = [f"rounds scored with {next(k for k in rows[0] if k.startswith('map_at_'))}, here {map_k_key}"]
    else:
        differing = []
    if differing:
        raise ValueError(
            "the checkpoint's rounds were scored with other evaluation settings ("
            + "; ".join(differing)
            + "): resume with the checkpoint's eval.* settings, or rounds.csv would mix two scorings"
        )


class ProgressiveRounds(L.Callback):
    def __init__(
        self,
        train_images: torch.Tensor,
        query_images: torch.Tensor,
        query_labels: torch.Tensor,
        db_images: torch.Tensor,
        db_labels: torch.Tensor,
        output_dir: str | Path,
        epochs_per_round: int,
        converge_bit_change: float = 0.0,
        reset_gan_each_round: bool = False,
        initial_metrics: dict[str, float] | None = None,
        grid_size: int = 8,
        eval_kwargs: dict[str, Any] | None = None,
        train_features: torch.Tensor | None = None,
        vote_neighbors: int = 0,
        vote_iterations: int = 1,
        lr_schedule: str = "constant",
        lr_min_factor: float = 0.0,
    ) -> None:
        check_round_settings(
            epochs_per_round, converge_bit_change, grid_size, vote_neighbors, vote_iterations, lr_schedule,
            lr_min_factor,
        )  # fmt: skip
        if vote_neighbors and train_features is None:
            raise ValueError("vote_neighbors > 0 needs train_features: the training images' features [n, d]")
        if vote_neighbors >= train_images.shape[0]:
            raise ValueError(
                f"vote_neighbors={vote_neighbors} must be below the number of training images "
                f"({train_images.shape[0]}): lower it, or set it to 0 to switch the vote off"
            )
        if vote_neighbors and train_features.shape[0] != train_images.shape[0]:
            raise ValueError(
                f"train_features has {train_features.shape[0]} rows for {train_images.shape[0]} training images"
            )
        self.train_features, self.vote_neighbors, self.vote_iterations = train_features, vote_neighbors, vote_iterations
        self._voters: torch.Tensor | None = None  # [n, vote_neighbors + 1] nearest training images, itself first
        self.train_images, self.query_images, self.db_images = train_images, query_images, db_images
        self.query_labels, self.db_labels = query_labels, db_labels
        self.output_dir = Path(output_dir)
        self.epochs_per_round = epochs_per_round
        self.lr_schedule, self.lr_min_factor = lr_schedule, lr_min_factor
        self.converge_bit_change = converge_bit_change
        self.reset_gan_each_round = reset_gan_each_round
        if grid_size > train_images.shape[0]:
            log.warning(
                "grid_size=%d is more than the %d training images: the grids show %d a row",
                grid_size, train_images.shape[0], train_images.shape[0],
            )  # fmt: skip
        self.grid_size = min(grid_size, train_images.shape[0])
        self.eval_kwargs = dict(eval_kwargs or {})
        self.map_k_key = f"map_at_{self.eval_kwargs.get('map_k', 1000)}"  # rounds.csv's mAP@K column
        self.rows: list[dict[str, float]] = []
        if initial_metrics is not None:
            self.rows.append(
                {
                    "round": 0,
                    "bit_change": math.nan,
                    "map_all": initial_metrics["map_all"],
                    self.map_k_key: initial_metrics.get(self.map_k_key, math.nan),
                    **code_columns(initial_metrics),
                }
            )

    # --------------------------------------------------------------------------- state (resume)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "eval": self.eval_kwargs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # how the restored rows were scored, for a checkpoint file outside any run (inside one, the run's
        # config.yaml is compared first); a checkpoint written before this record names only its mAP@K column
        check_same_scoring(state_dict, self.eval_kwargs)
        self.rows = list(state_dict["rows"])

    # --------------------------------------------------------------------------- hooks

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        t = int(pl_module.current_round)
        last = self.rows[-1] if self.rows else None
        # a run that stopped converged, resumed at that round's end: without this it would train another round
        if (
            t > 0
            and trainer.current_epoch == t * self.epochs_per_round
            and last is not None
            and int(last["round"]) == t
            and last["bit_change"] < self.converge_bit_change
        ):
            log.info(
                "round %d already converged (%.2f%% of the bits changed, below converge_bit_change=%g): "
                "nothing to train; a lower method.progressive.converge_bit_change trains on",
                t, 100 * last["bit_change"], self.converge_bit_change,
            )  # fmt: skip
            trainer.should_stop = True
        if trainer.is_global_zero:
            self._write_rounds_csv()
            if t == 0:
                self._save_grid(pl_module, 0, trainer.loggers, logger_step(trainer))
                if self.rows and trainer.ckpt_path is None:  # round 0 starts the curves (not again on a resume)
                    self._log_row(trainer, self.rows[0])

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        factor = 1.0
        epoch = trainer.current_epoch
        decay_start = round_start = epoch - epoch % self.epochs_per_round
        if self.lr_schedule == "cosine_after_warmup":
            decay_start = max(round_start, pl_module.warmup_epochs)
        if self.lr_schedule != "constant" and epoch >= decay_start:
            batches = trainer.num_training_batches  # inf for a dataset without a length: the epoch steps it
            within = batch_idx / batches if math.isfinite(batches) and batches > 0 else 0.0
            progress = (epoch - decay_start + within) / (round_start + self.epochs_per_round - decay_start)
            factor = self.lr_min_factor + (1 - self.lr_min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                # the configured rate, kept in the group; on a resume DeepHasher.on_train_start drops it and
                # puts the command's rate in `lr`, so a cosine run resumed as constant does not keep the rate
                # it stopped at
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.epochs_per_round:
            return
        if not reached_last_batch(trainer):
            return  # a stop in mid-epoch (max_steps, max_time): Lightning ends the epoch, the round is not over
        new_codes = self._vote(self._encode_all(trainer, pl_module), pl_module.device)
        bit_change = float((new_codes != pl_module.codes.bool().cpu()).float().mean())
        pl_module.set_codes(new_codes)
        pl_module.current_round += 1
        t = int(pl_module.current_round)
        row = {"round": t, "bit_change": bit_change, "map_all": math.nan, self.map_k_key: math.nan}
        if trainer.is_global_zero:
            q = pack_codes(pl_module.encode_inputs(self.query_images))
            db = pack_codes(pl_module.encode_inputs(self.db_images))
            m = evaluate_packed(q, self.query_labels, db, self.db_labels, **self.eval_kwargs).metrics
            row.update({"map_all": m["map_all"], self.map_k_key: m[self.map_k_key]})
            row.update(code_columns({f"db_{k}": v for k, v in code_statistics(db, db.shape[1] * 8).items()}))
            self.rows.append(row)
            self._write_rounds_csv()
            self._save_grid(pl_module, t, trainer.loggers, logger_step(trainer))
            self._log_row(trainer, row)
        if self.reset_gan_each_round:
            pl_module.reset_gan()
            for opt in trainer.optimizers[:2]:  # D and G
                opt.state.clear()
        if bit_change < self.converge_bit_change:
            trainer.should_stop = True

    # --------------------------------------------------------------------------- helpers

    @staticmethod
    def _log_row(trainer: L.Trainer, row: dict[str, float]) -> None:
        """A rounds.csv row to the loggers as `rounds/*`, at the step the losses are logged at (round 0
        has no bit change: that column is left out, not sent as NaN)."""
        values = {f"rounds/{k}": v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=logger_step(trainer))

    def _encode_all(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        n, world, rank = self.train_images.shape[0], trainer.world_size, trainer.global_rank
        if world == 1:
            return pl_module.encode_inputs(self.train_images)
        shard = math.ceil(n / world)
        index = torch.arange(rank * shard, (rank + 1) * shard).clamp(max=n - 1)
        mine = pl_module.encode_inputs(self.train_images[index]).to(pl_module.device)
        gathered = pl_module.all_gather(mine)  # [world, shard, bits]
        return gathered.reshape(world * shard, -1)[:n].cpu().bool()

    def _vote(self, codes: torch.Tensor, device: torch.device) -> torch.Tensor:
        """H's codes refined by the neighbourhood vote in feature space (unchanged when it is off)."""
        if not self.vote_neighbors:
            return codes
        if self._voters is None:  # the same graph every round: computed once, on the module's device
            x = self.train_features.to(device)
            self._voters = own_neighbors(x, self.vote_neighbors)
        return majority_vote(codes, self._voters, self.vote_iterations)

    def _write_rounds_csv(self) -> None:
        lines = [",".join(["round", "bit_change", "map_all", self.map_k_key, *CODE_COLUMNS])]
        for r in self.rows:
            line = f"{r['round']},{r['bit_change']:.6f},{r['map_all']:.6f},{r[self.map_k_key]:.6f}"
            distinct, correlation = code_columns(r).values()
            lines.append(line + f",{distinct:.0f},{correlation:.6f}")
        write_text(self.output_dir / "rounds.csv", "\n".join(lines) + "\n")

    def _save_grid(self, pl_module: L.LightningModule, t: int, loggers: list, step: int) -> None:
        """Row 1: real training images spread over the set; row 2: G(z | their current codes). Saved as
        grids/round_<t>.png and sent to the image-showing loggers (W&B, TensorBoard) at `step`."""
        index = torch.linspace(0, self.train_images.shape[0] - 1, self.grid_size).long()
        real = pl_module.prepare(self.train_images[index].to(pl_module.device))
        fake = pl_module.generate(pl_module.codes[index], seed=t)
        grid = make_grid(
            torch.cat([real, fake]).float().cpu(),
            nrow=self.grid_size,
            normalize=True,
            value_range=(-1, 1),
            pad_value=1.0,
        )
        path = self.output_dir / "grids" / f"round_{t}.png"
        with atomic_path(path) as tmp:
            save_image(grid, tmp, format="png")
        log_image(loggers, "rounds/grid", grid, path, step)
