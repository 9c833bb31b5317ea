"""Rerunning a command into an existing run directory: continue the same run, or refuse.

A run directory records its config.json, stats.json and run.json (the data seed and the precision
it computes in). A rerun resumes that run, so every flag that changes what the run computes must
be the same; the few that only say how or where it runs may change freely, and a few that
continue the same run sensibly (more epochs, another final evaluation) may change when asked for
by name with --allow_changes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os

from alexnet_keras import run_dir, run_files
from alexnet_keras.config import ALLOWED_CHANGES, FREE, TrainConfig
from alexnet_keras.data.stats import DatasetStats


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What run.json holds: the data seed (also for runs without --seed), the precision, the
    layers that started from a fresh initialization (all, unless --init_from loaded some), and
    --init_from's settings without weights, which the run kept (`fine_tune.check_settings`)."""

    data_seed: int
    precision: str
    new_layers: tuple[str, ...] | None = None
    init_from_settings: dict | None = None

    def write(self, model_dir: str) -> None:
        path = os.path.join(model_dir, run_files.RUN_STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)
        os.replace(path + ".tmp", path)

    @classmethod
    def read(cls, model_dir: str) -> RunRecord | None:
        path = os.path.join(model_dir, run_files.RUN_STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                values = json.load(f)
            if values.get("new_layers") is not None:
                values["new_layers"] = tuple(values["new_layers"])
            return cls(**values)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} is not an alexnet_keras run record: {error}") from None


def check_model_dir(model_dir: str) -> bool:
    """Whether `model_dir` holds a run to resume; refuses a directory holding something else."""
    if not os.path.isdir(model_dir):
        if os.path.exists(model_dir):
            raise NotADirectoryError(f"--model_dir={model_dir} is a file, not a directory.")
        return False
    if os.path.exists(os.path.join(model_dir, run_files.CONFIG_FILE)):
        return True
    if os.listdir(model_dir):
        raise ValueError(
            f"--model_dir={model_dir} is not empty and holds no {run_files.CONFIG_FILE}: it is not "
            "an alexnet_keras run. Pass a new or empty directory; nothing was changed."
        )
    return False


def _show(value: object) -> str:
    if value is None:
        return "not set"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def resumed_config(
    model_dir: str,
    config: TrainConfig,
    stats: DatasetStats,
    precision: str,
    allow_changes: tuple[str, ...] = (),
) -> TrainConfig:
    """The config to continue the recorded run with; raises listing every change it refuses.

    Free flags take their new values; allowed changes take theirs when named in `allow_changes`;
    any other difference (or a different stats file, or a precision `auto` now resolves to
    differently) stops the run before any work.
    """
    unknown = sorted(set(allow_changes) - set(ALLOWED_CHANGES))
    if unknown:
        raise ValueError(
            f"--allow_changes={','.join(unknown)} is invalid: expected some of "
            f"{', '.join(ALLOWED_CHANGES)}."
        )
    recorded = run_files.load_config(model_dir)
    record = RunRecord.read(model_dir)
    changes = {
        field.name: (getattr(recorded, field.name), getattr(config, field.name))
        for field in dataclasses.fields(TrainConfig)
        if field.name not in FREE and getattr(recorded, field.name) != getattr(config, field.name)
    }
    if run_dir.load_stats(model_dir) != stats:
        changes.setdefault(
            "stats_file", (recorded.stats_file, f"{config.stats_file} (other values)")
        )
    if record is not None and record.precision != precision and "mixed_precision" not in changes:
        changes["mixed_precision"] = (
            f"{recorded.mixed_precision} (computing in {record.precision})",
            f"{config.mixed_precision} (computing in {precision} on this machine)",
        )
    refused = {name: values for name, values in changes.items() if name not in allow_changes}
    if refused:
        listed = "; ".join(
            f"--{name} recorded {_show(old)}, now {_show(new)}"
            for name, (old, new) in refused.items()
        )
        allowed = [name for name in refused if name in ALLOWED_CHANGES]
        how = "Use a new --model_dir for a new run"
        if allowed:
            how += (
                f", or pass --allow_changes={','.join(allowed)} to continue this run with the new "
                "values" + (" (the other differences cannot change mid-run)" if len(allowed) <
                            len(refused) else "")
            )  # fmt: skip
        raise ValueError(
            f"--model_dir={model_dir} holds a run recorded with other settings: {listed}. {how}."
        )
    kept = set(FREE) | set(changes) - {"stats_file"}
    return dataclasses.replace(recorded, **{name: getattr(config, name) for name in kept})


def keep_history_before(path: str, epoch: int) -> None:
    """Drops history.csv rows of epochs >= `epoch` (0-based): a resumed run rewrites them.

    A run killed after writing an epoch's row but before that epoch's checkpoint redoes the
    epoch; without this its row would appear twice.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [row for row in rows[1:] if int(float(row[column])) < epoch]
    if len(kept) == len(rows):
        return
    with open(path + ".tmp", "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(path + ".tmp", path)
