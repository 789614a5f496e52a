"""gptlib.distributed: device choice, bfloat16 support, joining torchrun's processes, recipes, and data-parallel
training for real: two gloo processes on the CPU (torch.multiprocessing and the torchrun command line)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

import gptlib.distributed as gd
from gptlib.model import GPT, GPTConfig
from gptlib.checkpoint import load_checkpoint
from gptlib.train import train, TrainConfig
from gptlib.zoo import RECIPES

ROOT = Path(__file__).resolve().parent.parent
TINY = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32)
LR = 1e-3
TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _config(**kw) -> TrainConfig:
    base = dict(max_iters=1, batch_size=8, learning_rate=LR, warmup_iters=0, eval_interval=2, eval_iters=2, seed=0)
    return TrainConfig(**{**base, **kw})


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(32, (4000,), generator=g), torch.randint(32, (1000,), generator=g)


def _fresh_model() -> GPT:
    torch.manual_seed(0)
    return GPT(TINY)


def _weights(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}  # clones: tied tensors saved apart


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One of the processes: what torchrun would set, then gptlib.distributed.setup and gptlib.train.train."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    folder = Path(out)
    train_ids, val_ids = _data()
    with gd.setup(device="cpu") as info:
        assert (info.rank, info.world_size, info.backend) == (rank, world, "gloo")
        for steps in (1, 5):
            model = _fresh_model()
            history = train(model, train_ids, val_ids, _config(max_iters=steps, checkpoint_dir=str(folder / f"ckpt-{steps}-{rank}")),
                            show_progress=False)
            save_file(_weights(model), folder / f"weights-{steps}-{rank}.safetensors")
            (folder / f"history-{steps}-{rank}.json").write_text(json.dumps(history.to_dict()))
        try:
            train(_fresh_model(), train_ids, val_ids, _config(batch_size=7), show_progress=False)
        except ValueError as e:
            (folder / f"error-{rank}.txt").write_text(str(e))
        assert dist.is_initialized()
    assert not dist.is_initialized()  # the with block left the group


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two-ranks")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def _single(steps: int) -> tuple[dict[str, torch.Tensor], list[float]]:
    train_ids, val_ids = _data()
    model = _fresh_model()
    history = train(model, train_ids, val_ids, _config(max_iters=steps), show_progress=False)
    return _weights(model), history.train_loss


def test_one_step_on_two_processes_is_one_step_on_the_whole_batch(two_ranks):
    ddp = load_file(two_ranks / "weights-1-0.safetensors")
    single, losses = _single(1)
    start = _weights(_fresh_model())
    assert _max_diff(single, start) > 0.9 * LR  # the step moved the weights by about the learning rate
    # float32 sums in another order; AdamW's first step lr * g / (|g| + eps) turns that into a visible
    # difference only where |g| is as small as eps, and then by at most lr: 1% of lr is rounding, not a bug
    assert _max_diff(ddp, single) < LR / 100
    ddp_losses = json.loads((two_ranks / "history-1-0.json").read_text())["train_loss"]
    assert ddp_losses == pytest.approx(losses, rel=1e-6)  # a few float32 ulps


def test_five_steps_agree_too(two_ranks):
    single, losses = _single(5)
    ddp = load_file(two_ranks / "weights-5-0.safetensors")
    assert _max_diff(ddp, single) < LR / 10
    ddp_losses = json.loads((two_ranks / "history-5-0.json").read_text())["train_loss"]
    assert ddp_losses == pytest.approx(losses, rel=1e-5)


def test_both_processes_log_the_same_losses_and_hold_the_same_weights(two_ranks):
    h0 = json.loads((two_ranks / "history-5-0.json").read_text())
    h1 = json.loads((two_ranks / "history-5-1.json").read_text())
    for key in ("step", "train_loss", "lr", "eval_step", "eval_train_loss", "val_loss"):
        assert h0[key] == h1[key], key
    assert len(h0["train_loss"]) == 5
    w0, w1 = load_file(two_ranks / "weights-5-0.safetensors"), load_file(two_ranks / "weights-5-1.safetensors")
    assert _max_diff(w0, w1) == 0.0  # the same averaged gradient and the same step in both processes


def test_only_process_0_writes_checkpoints(two_ranks):
    ckpt = load_checkpoint(two_ranks / "ckpt-5-0")
    assert ckpt.step == 5 and ckpt.history is not None and len(ckpt.history.train_loss) == 5
    assert _max_diff(_weights(ckpt.model), load_file(two_ranks / "weights-5-0.safetensors")) == 0.0
    assert not (two_ranks / "ckpt-5-1").exists() and not (two_ranks / "ckpt-1-1").exists()


def test_a_batch_that_does_not_split_evenly_is_refused(two_ranks):
    for rank in (0, 1):
        message = (two_ranks / f"error-{rank}.txt").read_text()
        assert "batch_size=7" in message and "2 processes" in message and "multiple of 2" in message


def test_the_command_line_under_torchrun(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "gptlib.distributed", "--out", str(out), "--max-iters", "2", "--batch-size", "4", "--n-layer", "1",
           "--n-embd", "32", "--n-head", "2", "--block-size", "16", "--max-chars", "20000", "--eval-iters", "1",
           "--dtype", "float32", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    result = subprocess.run(cmd, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es) on cpu: 2 steps, " in result.stdout and "ms per step (median)" in result.stdout
    ckpt = load_checkpoint(out)
    assert ckpt.step == 2 and ckpt.config.n_layer == 1 and ckpt.tokenizer is not None
    assert ckpt.train_config["batch_size"] == 4 and ckpt.train_config["max_iters"] == 2


# --- devices ---------------------------------------------------------------------------------------------


def test_pick_device_default_and_cpu():
    assert gd.pick_device().type in gd.DEVICE_TYPES
    assert gd.pick_device("cpu") == torch.device("cpu") == gd.pick_device(torch.device("cpu"))
    if torch.cuda.is_available():
        assert gd.pick_device().type == "cuda"
    elif torch.backends.mps.is_available():
        assert gd.pick_device().type == "mps"
    else:
        assert gd.pick_device() == torch.device("cpu")


@pytest.mark.parametrize("bad", ["tpu", "not a device", 3.5, "meta"])
def test_pick_device_refuses_unknown_devices(bad):
    with pytest.raises(ValueError, match="pick_device"):
        gd.pick_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_pick_device_refuses_a_missing_gpu():
    with pytest.raises(RuntimeError, match="no cuda device"):
        gd.pick_device("cuda")
    assert gd.bf16_supported("cuda") is False


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_pick_device_refuses_a_missing_mps():
    with pytest.raises(RuntimeError, match="no mps device"):
        gd.pick_device("mps")
    assert gd.bf16_supported("mps") is False


def test_bf16_supported():
    assert isinstance(gd.bf16_supported("cpu"), bool)
    assert gd.bf16_supported("meta") is False
    with pytest.raises(ValueError, match="bf16_supported"):
        gd.bf16_supported("no such device")


# --- setup ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_setup_without_torchrun_is_one_process(no_torchrun):
    with gd.setup(device="cpu") as info:
        assert (info.rank, info.local_rank, info.world_size, info.backend) == (0, 0, 1, None)
        assert info.is_main and info.device == torch.device("cpu")
        assert not dist.is_initialized()


def test_setup_with_world_size_1_is_one_process(no_torchrun):
    no_torchrun.setenv("WORLD_SIZE", "1")
    no_torchrun.setenv("RANK", "0")
    assert gd.setup(device="cpu").world_size == 1 and not dist.is_initialized()


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT not set"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT not set"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 must be smaller than WORLD_SIZE=2"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK=-1 must be >= 0"),
])
def test_setup_reports_a_bad_environment(no_torchrun, env, message):
    for k, v in env.items():
        no_torchrun.setenv(k, v)
    with pytest.raises(RuntimeError, match=message):
        gd.setup(device="cpu")
    assert not dist.is_initialized()


def test_setup_refuses_bad_backends(no_torchrun):
    with pytest.raises(ValueError, match="backend must be"):
        gd.setup("mpi")
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        no_torchrun.setenv(k, v)
    with pytest.raises(ValueError, match="nccl backend works on CUDA GPUs only"):
        gd.setup("nccl", device="cpu")
    assert not dist.is_initialized()


def test_several_processes_on_a_mac_use_the_cpu_since_gloo_cannot_connect_mps(no_torchrun):
    no_torchrun.setattr(gd, "pick_device", lambda device=None: torch.device("mps"))  # as on a Mac
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        no_torchrun.setenv(k, v)
    with pytest.raises(ValueError, match="gloo backend does not all-reduce MPS tensors; use device='cpu'"):
        gd.setup(device="mps")
    with pytest.raises(ValueError, match="this process trains on cpu"):  # the default moved to the CPU
        gd.setup("nccl")
    assert not dist.is_initialized()
    no_torchrun.setenv("WORLD_SIZE", "1")
    assert gd.setup().device == torch.device("mps")  # one process may use the Mac's GPU


def test_cleanup_without_a_group_does_nothing():
    gd.cleanup()
    assert not dist.is_initialized()


# --- recipes ----------------------------------------------------------------------------------------------


def test_make_recipe_replaces_fields():
    r = gd.make_recipe("shakespeare-char", n_layer=2, n_embd=64, max_iters=7, batch_size=6, dtype="bfloat16",
                       max_chars=1000)
    base = RECIPES["shakespeare-char"]
    assert r.model == {**base.model, "n_layer": 2, "n_embd": 64}
    assert (r.train.max_iters, r.train.batch_size, r.train.dtype) == (7, 6, "bfloat16")
    assert r.train.learning_rate == base.train.learning_rate and r.max_chars == 1000 and r.tokenizer == "char"
    assert gd.make_recipe(r) == r and gd.make_recipe("shakespeare-char") == base
    assert RECIPES["shakespeare-char"] == base  # the original is untouched


def test_make_recipe_refuses_unknown_names_and_bad_values():
    with pytest.raises(ValueError, match="unknown recipe"):
        gd.make_recipe("shakespeare-word")
    with pytest.raises(ValueError, match=r"unknown fields \['n_layers'\]"):
        gd.make_recipe("shakespeare-char", n_layers=2)
    with pytest.raises(ValueError, match="not divisible by n_head"):
        gd.make_recipe("shakespeare-char", n_embd=30)
    with pytest.raises(ValueError, match="batch_size"):
        gd.make_recipe("shakespeare-char", batch_size=0)
    with pytest.raises(ValueError, match="max_chars"):
        gd.make_recipe("shakespeare-char", max_chars=-5)


def test_the_gpu_recipe_is_nanogpts_shakespeare_char():
    r = gd.make_recipe("shakespeare-char-gpu")
    assert r.model == dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False)
    t = r.train
    assert (t.max_iters, t.batch_size, t.learning_rate, t.min_lr, t.warmup_iters, t.lr_decay_iters) == (5000, 64, 1e-3, 1e-4, 100, 5000)
    assert t.betas == (0.9, 0.99) and t.dtype == "bfloat16"
    with torch.device("meta"):
        n = GPT(GPTConfig(vocab_size=65, **r.model)).num_params(non_embedding=True)
    assert round(n / 1e6, 2) == 10.65  # nanoGPT prints "number of parameters: 10.65M"


def test_run_recipe_trains_in_one_process(tmp_path):
    recipe = gd.make_recipe("shakespeare-char", n_layer=1, n_embd=32, n_head=2, block_size=16, max_iters=2,
                            batch_size=4, eval_iters=1, max_chars=5000)
    model, tokenizer, history = gd.run_recipe(recipe, out=tmp_path / "ckpt", device="cpu", show_progress=False)
    assert len(history.train_loss) == 2 and model.config.vocab_size == tokenizer.vocab_size
    assert load_checkpoint(tmp_path / "ckpt").step == 2
    with pytest.raises(ValueError, match="recipe must be"):
        gd.run_recipe("shakespeare-char")


@pytest.mark.parametrize("steps", [1, 3])
def test_the_command_line_in_one_process_reports_a_time_per_step_only_when_there_is_one(no_torchrun, tmp_path,
                                                                                       capsys, steps):
    out = tmp_path / "run"
    args = ["--out", str(out), "--max-iters", str(steps), "--batch-size", "4", "--n-layer", "1", "--n-embd", "32",
            "--n-head", "2", "--block-size", "16", "--max-chars", "5000", "--eval-iters", "1", "--dtype", "float32",
            "--device", "cpu", "--no-progress"]
    assert gd.main(args) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "nan" not in line.lower() and f"checkpoint in {out}" in line
    if steps == 1:  # its only step's time includes the evaluation before it: no time per step to report
        assert line.startswith("1 process(es) on cpu: 1 step, validation loss ") and "ms per step" not in line
    else:
        assert line.startswith("1 process(es) on cpu: 3 steps, ") and "ms per step (median)" in line
    assert load_checkpoint(out).step == steps
