"""What the checkpoint-taking benchmark scripts share: a trained run, or a one-line usage error."""

from __future__ import annotations

import argparse
from pathlib import Path

from prn_model.data import Split
from prn_model.network import PRN
from prn_model.train import TrainConfig, config_split, load_checkpoint, read_records
from prn_model.zoo import load_model


def load_run(parser: argparse.ArgumentParser, path: Path) -> tuple[PRN, TrainConfig, Split]:
    """The checkpoint's model (checked by ``load_model``), its config and its rebuilt split.

    A path that is no finished, sound checkpoint, or whose data cannot be read, ends the
    script through ``parser.error`` (exit 2, one line) instead of a traceback.
    """
    try:
        model = load_model(path)
        stored = load_checkpoint(path).get("config")
        if not isinstance(stored, dict):
            raise ValueError(f"checkpoint {str(path)!r} holds no training config to rebuild from")
        config = TrainConfig.from_dict(stored)
        split = config_split(config, read_records(config, path.parent.parent / ".cache"))
    except (OSError, ValueError) as error:
        parser.error(str(error).splitlines()[0])
    return model, config, split
