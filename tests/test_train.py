"""End-to-end runs of the training recipe on tiny images (pretrained=False, CPU)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL
import pytest
import skimage
import torch
from PIL import Image

from prn_model import train as train_module
from prn_model import zoo
from prn_model.data import make_split
from prn_model.metrics import METRIC_NAMES
from prn_model.network import PRN
from prn_model.prototypes import num_prototypes
from prn_model.train import (
    TrainConfig,
    _Dist,
    build_transform,
    checkout_commit,
    config_split,
    evaluate_split,
    load_checkpoint,
    memory_bank_split,
    prototype_rows,
    read_records,
    run,
)
from prn_model.train_cli import main as train_prn_main
from prn_model.train_cli import parse_args
from prn_model.zoo import load_model
from tests.conftest import mixed_channel_folder, tiny_train_config
from tests.test_data import tiled_records  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
REAL_STEPS = 150
REAL_MIN_IMAGE_AUROC = 0.85  # measured 0.928 (image 128 px, 150 steps, seed 0)
REAL_MIN_PIXEL_AUROC = 0.65  # measured 0.758


def test_smoke_run_writes_all_outputs(tmp_path):
    metrics = run(tiny_train_config(), tmp_path / "run")
    out = tmp_path / "run"
    for name in ("metrics.json", "summary.md", "manifest.json", "recipe.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    # The options in readable form, beside the checkpoint; no command line from the API.
    config = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config == tiny_train_config() and not (out / "command.txt").exists()
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "image_f1_max"):
        assert key in saved and key in metrics
    assert set(saved["per_defect_type"]) == {"crack", "scratch", "spot"}
    # What a bit-exact re-run must share besides the seed (docs/prn.md, "Reproducibility").
    environment = saved["environment"]
    assert environment["torch"] == torch.__version__ and environment["device"] == "cpu"
    assert environment["cpu_threads"] == torch.get_num_threads()
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert environment["pillow"] == PIL.__version__  # decodes every image
    assert environment["scikit_image"] == skimage.__version__  # the demo data's texture
    assert environment.get("git_commit") == checkout_commit(ROOT)  # absent outside a checkout
    assert list((out / "heatmaps").glob("*.png"))
    manifest = json.loads((out / "manifest.json").read_text())
    few_shot = {item["image"] for item in manifest["few_shot"]}
    test = {item["image"] for item in manifest["test"]}
    assert len(few_shot) == 3 and not few_shot & test  # no leak


def test_checkout_commit_reads_head_loose_and_packed_refs_and_worktrees(tmp_path):
    """The environment's git_commit comes from .git's files, without running git."""
    commit, other = "a" * 40, "b" * 40
    repo = tmp_path / "repo"
    (repo / ".git/refs/heads").mkdir(parents=True)
    assert checkout_commit(tmp_path / "nothing") is None  # no checkout: absent
    (repo / ".git/HEAD").write_text("ref: refs/heads/main\n")
    assert checkout_commit(repo) is None  # an unborn branch
    (repo / ".git/packed-refs").write_text(f"# pack-refs with: peeled\n{other} refs/heads/main\n")
    assert checkout_commit(repo) == other
    (repo / ".git/refs/heads/main").write_text(commit + "\n")  # a loose ref wins
    assert checkout_commit(repo) == commit
    (repo / ".git/HEAD").write_text(other + "\n")  # detached
    assert checkout_commit(repo) == other
    (repo / ".git/HEAD").write_text("garbage\n")
    assert checkout_commit(repo) is None
    # A worktree: .git is a file naming its folder, whose commondir holds the refs.
    (repo / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git/worktrees/tree").mkdir(parents=True)
    (repo / ".git/worktrees/tree/HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git/worktrees/tree/commondir").write_text("../..\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / ".git").write_text(f"gitdir: {repo / '.git/worktrees/tree'}\n")
    assert checkout_commit(tree) == commit
    (tree / ".git").write_bytes(b"\xff\xfe")  # unreadable: absent, never an error
    assert checkout_commit(tree) is None


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not run from a git checkout")
def test_checkout_commit_is_the_commit_git_names():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git cannot read this checkout")
    assert checkout_commit(ROOT) == head
    assert train_module.run_environment(torch.device("cpu"))["git_commit"] == head


def test_resume_reaches_the_same_weights(tmp_path):
    straight = run(tiny_train_config(), tmp_path / "straight")
    run(tiny_train_config(stop_at_step=3), tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 2
    resumed = run(tiny_train_config(), tmp_path / "resumed", resume=True)
    for key in (*METRIC_NAMES, "rank_fingerprints"):
        assert straight[key] == resumed[key], key
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    # The rest of the state, too: the optimiser's moments, the schedule and the RNG.
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), (key, name)
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_fits_prototypes_on_the_gpu_and_resumes(tmp_path, monkeypatch):
    fitted_on = []
    fit_prototypes = PRN.fit_prototypes

    def spy(model, *args, **kwargs):
        fitted_on.append(model.device.type)
        return fit_prototypes(model, *args, **kwargs)

    monkeypatch.setattr(PRN, "fit_prototypes", spy)
    run(tiny_train_config(device="cuda", stop_at_step=3), tmp_path / "run")
    assert fitted_on == ["cuda"]
    # The resumed optimizer state must land on the GPU beside the parameters.
    metrics = run(tiny_train_config(device="cuda"), tmp_path / "run", resume=True)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 6
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0


def _fake_clock(monkeypatch: pytest.MonkeyPatch, elapsed: float) -> None:
    """The recipe's clock for the next run: it starts at 0 and every later reading says
    ``elapsed`` seconds have passed, so the recorded time is exact (no wall-clock bounds)."""
    readings = iter([0.0])
    clock = type(sys)("fake_time")
    clock.perf_counter = lambda: next(readings, elapsed)
    monkeypatch.setattr(train_module, "time", clock)


def test_resume_accepts_a_checkpoint_written_before_an_option_existed(tmp_path, monkeypatch):
    run(tiny_train_config(stop_at_step=3), tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    payload = load_checkpoint(path)
    del payload["config"]["original_weight"]  # as written before --original-weight
    del payload["train_seconds"]  # as written before it was stored: only new time counts
    torch.save(payload, path)
    _fake_clock(monkeypatch, 7.0)
    metrics = run(tiny_train_config(), tmp_path / "run", resume=True)
    assert load_checkpoint(path)["step"] == 6
    assert metrics["train_seconds"] == 7.0


def test_train_seconds_add_up_across_resumptions(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _fake_clock(monkeypatch, 3.0)
    run(tiny_train_config(stop_at_step=3), out)
    path = out / "checkpoint.pt"
    payload = load_checkpoint(path)
    assert payload["step"] == 2 and payload["train_seconds"] == 3.0
    payload["train_seconds"] = 1000.0  # as if the interrupted process had trained that long
    torch.save(payload, path)
    _fake_clock(monkeypatch, 7.0)
    metrics = run(tiny_train_config(), out, resume=True)
    assert load_checkpoint(path)["train_seconds"] == 1007.0
    assert metrics["train_seconds"] == 1007.0
    # Re-evaluating the finished run trains nothing: the figure stays.
    _fake_clock(monkeypatch, 50.0)
    again = run(tiny_train_config(), out, resume=True)
    assert again["train_seconds"] == 1007.0
    assert json.loads((out / "metrics.json").read_text())["train_seconds"] == 1007.0


_PEAK_OF_A_CHILD = """
import multiprocessing, sys
from prn_model.peak_memory import peak_rss_mib

def report(queue):
    queue.put(peak_rss_mib())

if __name__ == "__main__":
    sys.path.insert(0, ".")
    held = bytearray(800 * 2**20)
    held[:: 4096] = b"x" * len(held[:: 4096])  # touch every page: 800 MiB resident
    del held
    parent = peak_rss_mib()
    queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=report, args=(queue,))
    child.start()
    print(parent, queue.get())
    child.join()
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux's VmHWM")
def test_a_spawned_process_peak_memory_is_its_own(tmp_path):
    """A benchmark's seed runs in a spawned process: the parent's peak is not the seed's."""
    script = tmp_path / "peak.py"
    script.write_text(_PEAK_OF_A_CHILD)
    out = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    parent, child = map(float, out.stdout.split())
    assert parent > 800 and child < parent - 600, (parent, child)


def test_resume_accepts_relative_paths_of_older_checkpoints(tmp_path, monkeypatch):
    # Checkpoints written before the recipe stored paths absolute hold them as typed.
    (tmp_path / "textures").mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "textures" / "noise.png")
    config = tiny_train_config(stop_at_step=3, textures=str(tmp_path / "textures"))
    run(config, tmp_path / "run")
    path = tmp_path / "run" / "checkpoint.pt"
    payload = load_checkpoint(path)
    payload["config"]["textures"] = "textures"
    torch.save(payload, path)
    monkeypatch.chdir(tmp_path)
    run(tiny_train_config(textures=str(tmp_path / "textures")), "run", resume=True)
    assert load_checkpoint(path)["step"] == 6


def test_run_stores_relative_paths_given_through_the_python_api_absolute(tmp_path, monkeypatch):
    # prn-train resolves its paths itself; a TrainConfig built in Python is resolved by run().
    (tmp_path / "textures").mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "textures" / "noise.png")
    monkeypatch.chdir(tmp_path)
    run(tiny_train_config(stop_at_step=2, textures="textures"), "run")
    absolute = str((tmp_path / "textures").resolve())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["textures"] == absolute
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["textures"] == absolute


def test_a_folder_mixing_grey_and_colour_images_trains_in_colour(tmp_path):
    config = tiny_train_config(**mixed_channel_folder(tmp_path), n_anomalies=2, steps=2)
    metrics = run(config, tmp_path / "run")
    assert (
        metrics is not None and load_model(tmp_path / "run" / "checkpoint.pt").input_channels == 3
    )


def test_a_batch_the_processes_cannot_share_is_refused_before_the_folder_is_touched(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # a finished run --overwrite would replace
    monkeypatch.setattr(train_module, "_init_distributed", lambda device: _Dist(0, 2))
    monkeypatch.setattr(train_module.dist, "destroy_process_group", lambda: None)
    with pytest.raises(ValueError, match="batch_size 3 must be divisible by the 2 processes"):
        run(tiny_train_config(batch_size=3), out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["metrics.json"]


def test_a_recipe_that_is_not_yaml_is_one_clear_error(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("type: [1, 2\n")
    with pytest.raises(ValueError, match=r"recipe .*recipe\.yaml' is not valid YAML: .*line 2"):
        run(tiny_train_config(recipe=str(recipe)), tmp_path / "run")
    recipe.write_bytes(b"\x89PNG\r\n")  # not text: the error names the file
    with pytest.raises(ValueError, match=r"recipe .*recipe\.yaml' cannot be read as text"):
        run(tiny_train_config(recipe=str(recipe)), tmp_path / "run")
    recipe.write_text("p: 0.5\n")  # YAML, but no transform: named too
    with pytest.raises(ValueError, match=r"recipe .*recipe\.yaml': .*'type' key"):
        run(tiny_train_config(recipe=str(recipe)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_and_overwrite_together_are_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        run(tiny_train_config(), out, resume=True, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["metrics.json"]


def test_a_location_the_dataset_does_not_read_is_refused(tmp_path):
    """--root without --dataset mtd must not quietly train on the demo data."""
    with pytest.raises(ValueError, match=r"dataset 'demo' does not read root='"):
        tiny_train_config(root=str(tmp_path))
    with pytest.raises(ValueError, match=r"dataset 'mtd' does not read category='bottle'"):
        tiny_train_config(dataset="mtd", root=str(tmp_path), category="bottle")
    with pytest.raises(ValueError, match=r"dataset 'mvtec' does not read normal_dir="):
        tiny_train_config(
            dataset="mvtec", root=str(tmp_path), category="bottle", normal_dir=str(tmp_path)
        )
    with pytest.raises(ValueError, match=r"dataset 'demo' does not read root="):
        parse_args(["--root", str(tmp_path)])


def test_resume_with_another_config_fails_clearly(tmp_path):
    run(tiny_train_config(steps=2), tmp_path / "run")
    with pytest.raises(ValueError, match="another configuration.*lr"):
        run(tiny_train_config(steps=2, lr=0.5), tmp_path / "run", resume=True)
    path = tmp_path / "run" / "checkpoint.pt"
    payload = load_checkpoint(path)
    payload["config"]["textures"] = str(tmp_path / "gone")  # a folder since removed
    torch.save(payload, path)
    with pytest.raises(ValueError, match="not valid here.*textures must be an existing folder"):
        run(tiny_train_config(steps=2), tmp_path / "run", resume=True)


def test_bad_checkpoint_is_reported(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path)
    torch.save({"version": 99}, path)
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(path)


def test_attention_divisors_reach_the_model_and_are_validated(tmp_path):
    config = tiny_train_config(steps=2, attention_divisors=(1,), stop_at_step=2)
    assert config.model_config().attention_divisors == (1,)
    run(config, tmp_path / "run")
    assert load_model(tmp_path / "run" / "checkpoint.pt").config.attention_divisors == (1,)
    for bad in ([], [0], 4, ["2"], [True]):
        with pytest.raises(ValueError, match="attention_divisors"):
            tiny_train_config(attention_divisors=bad)


@pytest.mark.parametrize(
    "names",
    [["self_texture"], ["cutpaste", "poisson", "corruption"], ["band", "scar", "band"]],
)
def test_simulated_strategies_build_the_training_mix(names, tmp_path):
    config = tiny_train_config(simulated=names)
    split = make_split(read_records(config, tmp_path), 3, seed=0)
    simulated = build_transform(config, split).transforms[-1]
    assert [type(t).__name__ for t in simulated.transforms] == [
        {
            "self_texture": "PerlinTexturePaste",
            "cutpaste": "CutPaste",
            "poisson": "PoissonPatch",
            "corruption": "LocalCorruption",
            "band": "EdgeBandPaste",
            "scar": "CutPasteScar",
        }[name]
        for name in names
    ]
    for bad in ([], ["texture", "dream"], "texture", 3):
        with pytest.raises(ValueError, match="simulated"):
            tiny_train_config(simulated=bad)


def test_seen_placement_options_reach_the_training_mix(tmp_path):
    config = tiny_train_config(seen_position="source", seen_rotation=(-5, 5))
    split = make_split(read_records(config, tmp_path), 3, seed=0)
    seen = build_transform(config, split).transforms[1]
    assert (seen.position, seen.rotation) == ("source", (-5.0, 5.0))
    with pytest.raises(ValueError, match="seen_position"):
        tiny_train_config(seen_position="middle")
    for bad in ([5, -5], [0], "0 0", [0, 400], [True, 1]):
        with pytest.raises(ValueError, match="seen_rotation"):
            tiny_train_config(seen_rotation=bad)


def test_band_sides_reach_the_band_strategy(tmp_path):
    config = tiny_train_config(simulated=["band"], band_sides=("top", "bottom"))
    split = make_split(read_records(config, tmp_path), 3, seed=0)
    (band,) = build_transform(config, split).transforms[-1].transforms
    assert band.sides == ("top", "bottom") and config.band_sides == ["top", "bottom"]
    assert tiny_train_config().band_sides == ["top", "bottom", "left", "right"]
    for bad in ([], ["middle"], "top", ["top", "top"]):
        with pytest.raises(ValueError, match="band_sides"):
            tiny_train_config(band_sides=bad)


def test_crack_angle_reaches_the_crack_strategy(tmp_path):
    config = tiny_train_config(simulated=["crack"], crack_angle=(80, 100))
    split = make_split(read_records(config, tmp_path), 3, seed=0)
    (crack,) = build_transform(config, split).transforms[-1].transforms
    assert crack.angle == (80.0, 100.0) and config.crack_angle == [80.0, 100.0]
    assert tiny_train_config().crack_angle == [0.0, 180.0]
    for bad in ([100, 80], [90], "90 90", [0, 400], [False, 1]):
        with pytest.raises(ValueError, match="crack_angle"):
            tiny_train_config(crack_angle=bad)


def test_original_weight_adds_the_few_shot_images_to_the_mix(tmp_path):
    config = tiny_train_config(original_weight=0.5)
    split = make_split(read_records(config, tmp_path), 3, seed=0)
    mix = build_transform(config, split)
    assert [type(t).__name__ for t in mix.transforms][-1] == "RealAnomalyImage"
    assert mix.weights[-1] == 0.5 and len(mix.transforms[-1]._pool) == 3
    assert len(build_transform(tiny_train_config(), split).transforms) == 3  # the paper's mix
    with pytest.raises(ValueError, match="original_weight"):
        tiny_train_config(original_weight=-1)
    config, *_ = parse_args(["--original-weight", "0.25"])
    assert config.original_weight == 0.25


def test_augmented_original_weight_adds_anomalies_on_top_of_the_few_shot_images(tmp_path):
    config = tiny_train_config(augmented_original_weight=0.5)
    split = make_split(read_records(config, tmp_path), 3, seed=0)
    mix = build_transform(config, split)
    assert mix.weights[-1] == 0.5
    real, added = mix.transforms[-1].transforms
    assert type(real).__name__ == "RealAnomalyImage" and len(real._pool) == 3
    assert [type(t).__name__ for t in added.transforms] == ["SeenAnomalyPaste", "OneOf"]
    image = torch.rand(3, 64, 64)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        params = mix.transforms[-1].sample_params(image, generator)
        combined, mask = mix.transforms[-1].apply(image, params)
        original, original_mask = real.apply(image, params["steps"][0])
        # The few-shot image's own defect stays labelled, and something was added on top.
        assert torch.all(mask >= original_mask) and mask.sum() > original_mask.sum()
        assert not torch.equal(combined, original)
    with pytest.raises(ValueError, match="augmented_original_weight"):
        tiny_train_config(augmented_original_weight=float("nan"))
    config, *_ = parse_args(["--augmented-original-weight", "0.25"])
    assert config.augmented_original_weight == 0.25


def test_prototype_ratio_sets_the_number_of_prototypes(tmp_path):
    config = tiny_train_config(prototype_ratio=0.5, steps=2, stop_at_step=2)
    run(config, tmp_path / "run")
    model = load_model(tmp_path / "run" / "checkpoint.pt")
    n_normal = len(json.loads((tmp_path / "run" / "manifest.json").read_text())["train_normal"])
    assert model.config.num_prototypes == (num_prototypes(n_normal, 0.5),) * 3
    with pytest.raises(ValueError, match="prototype_ratio"):
        tiny_train_config(prototype_ratio=2.0)


def test_prototype_rows_take_whole_tiles(tiled_records):  # noqa: F811
    split = make_split(tiled_records, n_anomalies=2, seed=0, split_by="group")
    assert prototype_rows(split, 1.0, seed=0) == list(range(len(split.train_normal)))
    for seed in range(3):
        rows = prototype_rows(split, 0.5, seed)
        chosen = {split.train_normal[row].group for row in rows}
        # 6 training tiles of 3 lightings: 3 whole tiles, the other 3 left to the head alone.
        assert len(chosen) == 3 and len(rows) == 9
        assert rows == sorted(rows) == prototype_rows(split, 0.5, seed)
    assert len({tuple(prototype_rows(split, 0.5, seed)) for seed in range(6)}) > 1
    # Without tiles every image is its own: a quarter of 8 images is 2.
    images = [dataclasses.replace(r, group=None) for r in split.train_normal[:8]]
    ungrouped = dataclasses.replace(split, train_normal=images)
    assert len(prototype_rows(ungrouped, 0.25, seed=0)) == 2


def test_prototype_share_fits_the_prototypes_on_fewer_images(tmp_path):
    config = tiny_train_config(prototype_ratio=0.5, prototype_share=0.5, steps=2, stop_at_step=2)
    run(config, tmp_path / "run")
    model = load_model(tmp_path / "run" / "checkpoint.pt")
    n_normal = len(json.loads((tmp_path / "run" / "manifest.json").read_text())["train_normal"])
    assert model.config.num_prototypes == (num_prototypes(round(n_normal / 2), 0.5),) * 3
    for bad in (0, 1.5, True, float("nan")):
        with pytest.raises(ValueError, match="prototype_share"):
            tiny_train_config(prototype_share=bad)
    config, *_ = parse_args(["--prototype-share", "0.5"])
    assert config.prototype_share == 0.5


def test_patch_matching_run_writes_a_loadable_checkpoint(tmp_path):
    config = tiny_train_config(
        prototype_matching="patch", patch_prototypes=8, steps=2, stop_at_step=2
    )
    run(config, tmp_path / "run")
    model = load_model(tmp_path / "run" / "checkpoint.pt")
    assert model.config.prototype_matching == "patch"
    assert [p.shape[0] for p in model.prototypes.prototypes] == [8, 8, 8]
    scores, maps = model.predict(torch.rand(2, 1, 80, 72))  # grayscale, as trained
    assert scores.shape == (2,) and maps.shape == (2, 1, 80, 72)


def test_memory_bank_run_fits_saves_and_reloads_the_bank(tmp_path):
    config = tiny_train_config(memory_bank_size=40, memory_bank_weight=0.25, steps=2)
    metrics = run(config, tmp_path / "run")
    assert 0 <= metrics["image_auroc"] <= 1
    model = load_model(tmp_path / "run" / "checkpoint.pt")
    bank = model.memory_bank
    assert bank.is_fitted and bank.bank.shape == (40, 128 + 256)  # resnet18 strides 8 + 16
    assert bank.weight == 0.25 and model.config.memory_bank_size == 40
    scores, maps = model.predict(torch.rand(2, 1, 64, 64))  # the demo data are grayscale
    assert scores.shape == (2,) and ((maps >= 0) & (maps <= 1)).all()
    # Re-scored from its checkpoint in the recipe's batches, the model gives the run's metrics
    # to the last digit (docs/prn.md, "Reproducibility").
    split = config_split(config, read_records(config, tmp_path / ".cache"))
    (tmp_path / "again").mkdir()
    rescored = evaluate_split(model, split, config, torch.device("cpu"), tmp_path / "again")
    for key in METRIC_NAMES:
        assert rescored[key] == metrics[key], key
    # the bank is fitted after training, so the last checkpoint holds it: resuming a finished
    # run re-evaluates the same model
    again = run(config, tmp_path / "run", resume=True)
    assert again["image_auroc"] == metrics["image_auroc"]
    with pytest.raises(ValueError, match="memory_bank_weight"):
        tiny_train_config(memory_bank_size=8, memory_bank_weight=-1)


def test_memory_bank_split_is_seeded_disjoint_and_complete():
    bank, calibration = memory_bank_split(25, seed=3)
    assert (len(bank), len(calibration)) == (23, 2)
    assert sorted(torch.cat([bank, calibration]).tolist()) == list(range(25))
    assert torch.equal(memory_bank_split(25, seed=3)[1], calibration)
    assert len(memory_bank_split(2, seed=0)[1]) == 1
    with pytest.raises(ValueError, match="at least 2 normal training images, got 1"):
        memory_bank_split(1, seed=0)


def test_recipe_parses_ablation_switches():
    config, out, *_ = parse_args(
        ["--attention-divisors", "1", "2", "--mix", "2", "0", "1", "--no-residuals"]
        + ["--simulated", "self_texture", "band", "--prototype-matching", "patch"]
        + ["--band-sides", "top", "bottom", "--crack-angle", "80", "100"]
        + ["--seen-position", "source", "--seen-rotation", "-10", "10"]
        + ["--memory-bank-size", "4096", "--memory-bank-weight", "0.25"]
        + ["--intensity-normalisation", "image", "--split-by", "group"]
    )
    assert config.split_by == "group"
    assert (config.memory_bank_size, config.memory_bank_weight) == (4096, 0.25)
    assert config.model_config().intensity_normalisation == "image"
    assert (config.seen_position, config.seen_rotation) == ("source", [-10.0, 10.0])
    assert config.model_config().prototype_matching == "patch"
    assert config.attention_divisors == [1, 2]
    assert config.simulated == ["self_texture", "band"]
    assert config.band_sides == ["top", "bottom"] and config.crack_angle == [80.0, 100.0]
    assert (config.normal_weight, config.seen_weight, config.simulated_weight) == (2, 0, 1)
    assert config.use_residuals is False and out == Path("runs/prn")


def test_model_option_starts_from_a_zoo_entry_and_options_override_it(capsys, tmp_path):
    root = str(tmp_path)
    config, *_ = parse_args(["--model", "prn_lite0_mtd_normalised", "--root", root])
    assert config == zoo.train_config("prn_lite0_mtd_normalised", root=root)
    config, *_ = parse_args(
        ["--model", "prn_lite0_mtd_band", "--root", root, "--steps", "7", "--mix", "1", "1", "0"]
        + ["--no-residuals", "--seed", "3"]
    )
    expected = zoo.train_config("prn_lite0_mtd_band", root=root, steps=7, seed=3)
    changed = {"normal_weight": 1.0, "simulated_weight": 0.0, "use_residuals": False}
    assert config == TrainConfig(**{**expected.to_dict(), **changed})
    assert parse_args([])[0] == TrainConfig()  # no --model: TrainConfig's own defaults
    with pytest.raises(SystemExit):
        parse_args(["--model", "prn_nope"])
    assert "invalid choice: 'prn_nope'" in capsys.readouterr().err


def test_split_by_is_validated():
    assert TrainConfig().split_by == "image"
    with pytest.raises(ValueError, match="split_by must be one of .* got 'tile'"):
        TrainConfig(split_by="tile")


def test_recipe_cli_errors():
    result = subprocess.run(
        [sys.executable, "recipes/train_prn.py", "--dataset", "mtd"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.startswith("train_prn: error:")
    assert "needs --root" in result.stderr


# Fine-tuning from stride 16 refits the prototypes before step 1 and freezes the encoder
# before step 2, each time under a new DDP wrapper.
@pytest.mark.parametrize(
    "fine_tuning",
    [[], ["--encoder-from-stride", "16", "--prototype-refit-every", "1", "--head-only-steps", "1"]],
    ids=["frozen", "fine-tuned"],
)
def test_torchrun_two_cpu_processes_agree(tmp_path, fine_tuning):
    """DDP on gloo: two ranks, each with half of every batch, end with identical weights."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "recipes/train_prn.py",
            "--backbone",
            "resnet18",
            "--no-pretrained",
            "--image-size",
            "64",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--n-anomalies",
            "3",
            "--device",
            "cpu",
            "--out",
            str(out),
            *fine_tuning,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Grad strides" not in result.stderr  # the depthwise layout warning is silenced
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # Rank 0 alone records the run: one config, one command line naming both processes.
    assert json.loads((out / "config.json").read_text())["batch_size"] == 4
    (command,) = (out / "command.txt").read_text().splitlines()
    assert command.endswith(
        f"--out {out}{''.join(' ' + a for a in fine_tuning)}  # under torchrun, 2 processes"
    )
    assert "python recipes/train_prn.py --backbone resnet18" in command
    first, second = metrics["rank_fingerprints"]
    assert first == second and first > 0


def test_ddp_stride_warning_filter_is_limited_to_depthwise_gradients():
    """Only the (C, 1, k, k) case, whose layouts are the same memory, is silenced."""
    template = (
        "Grad strides do not match bucket view strides. This may indicate ...\n"
        "grad.sizes() = [{}], strides() = [9, 1, 3, 1]\nbucket_view.sizes() = ..."
    )
    pattern = re.compile(train_module._DEPTHWISE_STRIDES_WARNING, re.I)
    assert pattern.match(template.format("64, 1, 3, 3"))
    assert not pattern.match(template.format("64, 3, 3, 3"))
    assert not pattern.match(template.format("64, 16"))


@pytest.mark.realdata
def test_real_mtd_run_learns_and_does_not_leak(shared_data, tmp_path):
    """A short ten-shot run on the real Magnetic Tile Defect data (skipped when absent)."""
    config = TrainConfig(
        dataset="mtd",
        root=str(shared_data / "mtd"),
        textures=str(shared_data / "dtd"),
        image_size=128,
        steps=REAL_STEPS,
        batch_size=8,
        n_anomalies=10,
        heatmaps=2,
        device="cpu",
    )
    metrics = run(config, tmp_path / "mtd")
    manifest = json.loads((tmp_path / "mtd" / "manifest.json").read_text())
    few_shot = {item["image"] for item in manifest["few_shot"]}
    test = {item["image"] for item in manifest["test"]}
    assert len(few_shot) == 10 and not few_shot & test
    assert {item["defect_type"] for item in manifest["few_shot"]} == {
        "Blowhole",
        "Break",
        "Crack",
        "Fray",
        "Uneven",
    }
    assert len(test) == 952 - 714 + 392 - 10
    assert set(metrics["per_defect_type"]) == {"Blowhole", "Break", "Crack", "Fray", "Uneven"}
    # Far above chance after a short run on 2 CPU cores (full runs: docs/results.md).
    assert metrics["image_auroc"] > REAL_MIN_IMAGE_AUROC
    assert metrics["pixel_auroc"] > REAL_MIN_PIXEL_AUROC


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    run(tiny_train_config(steps=2, heatmaps=1), out)
    finished = load_checkpoint(out / "checkpoint.pt")
    with pytest.raises(ValueError, match="already holds a run.*--overwrite"):
        run(tiny_train_config(steps=2, seed=1, stop_at_step=1), out)
    assert torch.equal(
        load_checkpoint(out / "checkpoint.pt")["model"]["decoder.logit.bias"],
        finished["model"]["decoder.logit.bias"],
    )  # untouched
    # Overwriting removes every output of the old run first: none can pass for the new one's.
    run(tiny_train_config(steps=2, seed=1, stop_at_step=1, checkpoint_every=1), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "manifest.json",
        "recipe.json",
    ]
    assert load_checkpoint(out / "checkpoint.pt")["config"]["seed"] == 1
    assert json.loads((out / "config.json").read_text())["seed"] == 1

    fresh = tmp_path / "fresh"
    run(tiny_train_config(steps=2, stop_at_step=1), fresh, resume=True)
    assert "no checkpoint" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run(tiny_train_config(), tmp_path / "file")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"lr": "0.1"}, "lr must be a positive number, got '0.1'"),
        ({"weight_decay": -0.1}, "weight_decay must be a number >= 0"),
        ({"weight_decay": "0"}, "weight_decay must be a number >= 0, got '0'"),
        ({"num_workers": -1}, "num_workers must be an int >= 0"),
        ({"num_workers": 1.5}, "num_workers must be an int >= 0, got 1.5"),
        ({"device": "foo"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"device": None}, "device must be auto, cpu, cuda or cuda:N, got None"),
        ({"device": "meta"}, "device must be auto, cpu, cuda or cuda:N, got 'meta'"),
        ({"steps": 2.7}, "steps must be an int >= 1, got 2.7"),
        ({"steps": "5"}, "steps must be an int >= 1, got '5'"),
        ({"batch_size": 3.9}, "batch_size must be an int >= 1, got 3.9"),
        ({"image_size": None}, "image_size must be an int >= 1, got None"),
        ({"checkpoint_every": True}, "checkpoint_every must be an int >= 1, got True"),
        ({"seed": -1}, r"seed must be an int in \[0, 2\*\*64\), got -1"),
        ({"seed": 1.5}, "seed must be an int .* got 1.5"),
        ({"seed": "0"}, "seed must be an int .* got '0'"),
        ({"seed": True}, "seed must be an int .* got True"),
        ({"n_anomalies": 2.5}, "n_anomalies must be an int >= 0, got 2.5"),
        ({"heatmaps": -2}, "heatmaps must be an int >= 0, got -2"),
        ({"stop_at_step": -5}, r"stop_at_step must be an int in \[1, 6\], got -5"),
        ({"stop_at_step": 7}, r"stop_at_step must be an int in \[1, 6\], got 7"),
        ({"stop_at_step": 1.5}, "stop_at_step must be an int in .* got 1.5"),
        ({"normal_weight": -1}, "normal_weight must be a number >= 0, got -1"),
        ({"seen_weight": float("nan")}, "seen_weight must be a number >= 0, got nan"),
        ({"simulated_weight": -3}, "simulated_weight must be a number >= 0, got -3"),
        ({"original_weight": True}, "original_weight must be a number >= 0, got True"),
        (
            {"normal_weight": 0, "seen_weight": 0, "simulated_weight": 0},
            "the mix weights must not all be 0",
        ),
        # Without few-shot anomalies only the normal and simulated parts are drawn.
        (
            {"n_anomalies": 0, "normal_weight": 0, "simulated_weight": 0},
            r"mix weights must not all be 0, got \{'normal_weight': 0.0, 'simulated_weight': 0.0\}",
        ),
        ({"pretrained": "no"}, "pretrained must be True or False, got 'no'"),
        ({"use_residuals": "false"}, "use_residuals must be True or False, got 'false'"),
        ({"textures": "/nonexistent"}, "textures must be an existing folder, got '/nonexistent'"),
        ({"textures": ""}, "textures must be an existing folder, got ''"),
        ({"recipe": "/nonexistent.yaml"}, "recipe must be an existing file"),
        ({"weights": "/nonexistent.pt"}, "weights must be an existing file"),
        ({"category": 3}, "category must be a non-empty string, got 3"),
    ],
)
def test_bad_options_fail_before_any_data_is_read(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_train_config(**overrides)


def test_dataset_folders_must_exist(tmp_path):
    with pytest.raises(ValueError, match="normal_dir must be an existing folder, got '/nonexist'"):
        TrainConfig(dataset="folder", normal_dir="/nonexist")
    with pytest.raises(ValueError, match="anomaly_dir must be an existing folder"):
        TrainConfig(dataset="folder", normal_dir=str(tmp_path), anomaly_dir="/nonexist")
    with pytest.raises(ValueError, match="root must be an existing folder, got '/nonexist'"):
        TrainConfig(dataset="mtd", root="/nonexist")
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="weights '.*weights.pt' contradicts pretrained=False"):
        tiny_train_config(weights=str(tmp_path / "weights.pt"))


def test_numbers_from_json_and_numpy_seeds_are_accepted():
    config = TrainConfig.from_dict({"lr": 1, "weight_decay": 0, "normal_weight": 3})
    assert (config.lr, config.weight_decay, config.normal_weight) == (1.0, 0.0, 3.0)
    assert isinstance(config.lr, float) and isinstance(config.normal_weight, float)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    seeded = TrainConfig(seed=np.int64(3))
    assert seeded.seed == 3 and type(seeded.seed) is int  # a plain int in checkpoints


@pytest.mark.parametrize(
    "bad", [["--seed", "-1"], ["--mix", "nan", "1", "1"], ["--textures", "/nonexistent"]]
)
def test_recipe_refuses_bad_options_before_writing_anything(tmp_path, capsys, bad):
    out = tmp_path / "run"
    assert train_prn_main(["--no-pretrained", "--out", str(out), *bad]) == 2
    assert "prn-train: error:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no run folder, no demo-data cache


def test_failed_text_write_leaves_nothing_behind(tmp_path):
    from prn_model.atomic import write_text_atomic

    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(tmp_path / "metrics.json", "\udc80")  # not encodable
    assert list(tmp_path.iterdir()) == []


def test_a_run_records_its_config_and_command_line_and_reruns_from_them(tmp_path, monkeypatch):
    """config.json and command.txt outlive a lost checkpoint; `--config` re-runs the run."""
    monkeypatch.chdir(tmp_path)
    tiny = ["--backbone", "resnet18", "--no-pretrained", "--image-size", "64", "--steps", "2"]
    tiny += ["--batch-size", "4", "--n-anomalies", "3", "--checkpoint-every", "1", "--device"]
    tiny += ["cpu"]
    first, again = tmp_path / "first", tmp_path / "again"
    assert train_prn_main([*tiny, "--out", "first", "--stop-at-step", "1"]) == 0
    interrupted = json.loads((first / "config.json").read_text())
    assert interrupted == load_checkpoint(first / "checkpoint.pt")["config"]
    assert interrupted["stop_at_step"] == 1
    cd = f"cd {shlex.quote(str(tmp_path))} && prn-train "
    commands = [cd + shlex.join([*tiny, "--out", "first", "--stop-at-step", "1"])]
    assert (first / "command.txt").read_text().splitlines() == commands
    # Without the checkpoint: its config.json re-runs the run, the whole schedule this time.
    assert train_prn_main(["--config", "first/config.json", "--out", "again"]) == 0
    assert json.loads((again / "config.json").read_text()) == {**interrupted, "stop_at_step": None}
    assert (again / "command.txt").read_text() == cd + "--config first/config.json --out again\n"
    # A resumption that changes the options is refused before anything is written ...
    assert train_prn_main([*tiny, "--out", "first", "--resume", "--lr", "0.5"]) == 2
    assert json.loads((first / "config.json").read_text()) == interrupted
    assert (first / "command.txt").read_text().splitlines() == commands
    # ... one with the same options adds its command line and ends as the re-run did.
    assert train_prn_main([*tiny, "--out", "first", "--resume"]) == 0
    commands.append(cd + shlex.join([*tiny, "--out", "first", "--resume"]))
    assert (first / "command.txt").read_text().splitlines() == commands
    assert (first / "config.json").read_text() == (again / "config.json").read_text()
    resumed, rerun = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    for key in (*METRIC_NAMES, "rank_fingerprints"):
        assert resumed[key] == rerun[key], key
    # --overwrite starts the record afresh.
    assert train_prn_main([*tiny, "--out", "first", "--overwrite", "--seed", "1"]) == 0
    assert (first / "command.txt").read_text().splitlines() == [
        cd + shlex.join([*tiny, "--out", "first", "--overwrite", "--seed", "1"])
    ]
    assert json.loads((first / "config.json").read_text())["seed"] == 1


def test_a_test_set_without_anomalies_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no anomalous images left.*lower --n-anomalies"):
        run(tiny_train_config(n_anomalies=60), tmp_path / "run")  # every demo anomaly


def test_a_gpu_this_machine_lacks_is_named_before_training(monkeypatch: pytest.MonkeyPatch):
    """torch's own error for cuda:3 on a one-GPU machine comes from deep inside set_device."""
    from prn_model.train import _resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device 'cuda:3' requested but this machine has 1 CUDA"):
        _resolve_device("cuda:3", local_rank=0)


def test_a_torchrun_process_past_the_gpu_count_is_named(monkeypatch: pytest.MonkeyPatch):
    """--nproc_per_node above the GPU count: LOCAL_RANK 1 on a one-GPU machine has no GPU."""
    from prn_model.train import _resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"LOCAL_RANK 1 has no GPU: this machine has 1 CUDA"):
        _resolve_device("cuda", local_rank=1)
