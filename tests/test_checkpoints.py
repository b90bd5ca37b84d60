"""Checkpoints count only once complete: a save killed half-way never becomes the one that is resumed.

The end-to-end case is a real process killed with SIGKILL while train.py writes a
checkpoint, then resumed with ``--resume_from_checkpoint last`` by one process
and by two (torchrun, gloo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hf_hardneg.checkpoints import (
    COMPLETE_MARKER,
    checkpoint_problem,
    list_checkpoints,
    mark_complete,
    newest_complete_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _fake_checkpoint(root: Path, step: int, state: str = '{"global_step": 1}', marked: bool = True) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    (folder / "optimizer.pt").write_bytes(b"y" * 5)
    (folder / "trainer_state.json").write_text(state)
    if marked:
        mark_complete(folder)
    return folder


def test_the_marker_records_files_and_sizes_and_catches_every_kind_of_damage(tmp_path):
    good = _fake_checkpoint(tmp_path, 4)
    assert checkpoint_problem(good) is None
    assert json.loads((good / COMPLETE_MARKER).read_text())["files"] == {
        "model.safetensors": 10, "optimizer.pt": 5, "trainer_state.json": 18}

    (good / "optimizer.pt").write_bytes(b"")
    assert checkpoint_problem(good) == "optimizer.pt has 0 bytes, the save wrote 5"
    (good / "optimizer.pt").unlink()
    assert checkpoint_problem(good) == "optimizer.pt is missing (the save recorded it)"

    # what a SIGKILL during a save leaves: weights, a 0-byte optimizer file, no trainer state, no marker
    killed = tmp_path / "checkpoint-8"
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"x")
    (killed / "optimizer.pt").write_bytes(b"")
    assert checkpoint_problem(killed) == f"optimizer.pt is empty and {COMPLETE_MARKER} is missing: the save was interrupted"
    (killed / "optimizer.pt").write_bytes(b"y")
    assert checkpoint_problem(killed) == "trainer_state.json is missing: the save was interrupted"
    (killed / "trainer_state.json").write_text('{"log_history": [{"loss": 1.0, "st')  # truncated mid-write
    assert checkpoint_problem(killed).startswith("trainer_state.json is not valid JSON (Unterminated string")

    # a plain Trainer's checkpoint (no marker) is accepted when whole
    plain = _fake_checkpoint(tmp_path, 2, marked=False)
    assert checkpoint_problem(plain) is None
    # the card files are rewritten after the save (atomically): they are not part of the record
    (good / "optimizer.pt").write_bytes(b"y" * 5)
    (good / "README.md").write_text("a card written after the save")
    assert checkpoint_problem(good) is None


def test_newest_complete_checkpoint_skips_newer_broken_ones_and_says_why(tmp_path):
    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 10)
    _fake_checkpoint(tmp_path, 12, state='{"global_')
    broken = tmp_path / "checkpoint-14"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoint-notes").mkdir()  # not a checkpoint folder
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-12",
                                                            "checkpoint-14"]  # by step, not by name
    newest, skipped = newest_complete_checkpoint(tmp_path)
    assert newest.name == "checkpoint-10"
    assert [(p.name, why.split(" (")[0]) for p, why in skipped] == [
        ("checkpoint-14", "trainer_state.json is missing: the save was interrupted"),
        ("checkpoint-12", "trainer_state.json is not valid JSON"),
    ]
    assert newest_complete_checkpoint(tmp_path / "absent") == (None, [])


# -- real processes ---------------------------------------------------------------------------------------------

# train.py, run in a process that SIGKILLs itself while the checkpoint of step KILL_AT is being written: right
# after opening optimizer.pt for writing, so the folder holds weights, a 0-byte optimizer.pt and no trainer state
KILLED_DURING_SAVE = textwrap.dedent("""
    import os, runpy, signal, sys
    sys.path.insert(0, {repo!r})
    from hf_hardneg.trainer import HardNegCLIPTrainer

    original = HardNegCLIPTrainer._save_optimizer_and_scheduler

    def save_and_die(self, output_dir):
        if self.state.global_step == {kill_at}:
            open(os.path.join(output_dir, "optimizer.pt"), "wb").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)

    HardNegCLIPTrainer._save_optimizer_and_scheduler = save_and_die
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path({train!r}, run_name="__main__")
""")


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory, tiny_captions) -> Path:
    from test_trainer import make_rows

    path = tmp_path_factory.mktemp("rows") / "rows"
    make_rows(tiny_captions, num_rows=16, k=1).save_to_disk(path)
    return path


def _train_args(model: Path, data: Path, out: Path) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset_path", str(data), "--num_hard_negatives", "1",
            "--per_device_train_batch_size", "4", "--max_steps", "12", "--save_strategy", "steps",
            "--save_steps", "4", "--logging_steps", "1", "--learning_rate", "1e-3", "--use_cpu", "true",
            "--report_to", "none", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
            "--output_dir", str(out)]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_a_save_killed_with_sigkill_is_skipped_on_resume(tmp_path, tiny_clip_dir, tiny_rows):
    out = tmp_path / "run"
    args = _train_args(tiny_clip_dir, tiny_rows, out)
    script = tmp_path / "killed_during_save.py"
    script.write_text(KILLED_DURING_SAVE.format(repo=str(REPO_ROOT), train=str(REPO_ROOT / "train.py"), kill_at=8))
    killed = subprocess.run([sys.executable, str(script), *args], env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "checkpoint-8" / "optimizer.pt").stat().st_size == 0
    assert not (out / "checkpoint-8" / "trainer_state.json").exists()
    assert (out / "checkpoint-4" / COMPLETE_MARKER).is_file()

    # asking for the broken folder by name: one line naming the problem and the way out
    direct = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args, "--resume_from_checkpoint",
                             str(out / "checkpoint-8")], env=_env(), capture_output=True, text=True, timeout=300)
    assert direct.returncode == 2
    assert direct.stderr.strip().splitlines()[-1] == (
        f"train.py: error: --resume_from_checkpoint {out / 'checkpoint-8'}: cannot resume, optimizer.pt is empty "
        f"and {COMPLETE_MARKER} is missing: the save was interrupted; the newest complete checkpoint beside it is "
        f"{out / 'checkpoint-4'}")

    # a new run into the same folder is refused rather than mixed with the old checkpoints
    fresh = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args], env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert fresh.returncode == 2
    assert "already holds checkpoints of an earlier run (checkpoint-4, checkpoint-8)" in fresh.stderr
    assert "--resume_from_checkpoint last" in fresh.stderr and "--overwrite_output_dir" in fresh.stderr

    # two processes resume from the newest complete checkpoint, saying once what they skipped
    resumed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              str(REPO_ROOT / "train.py"), *args, "--per_device_train_batch_size", "2",
                              "--resume_from_checkpoint", "last"],
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert log.count(f"not resuming from {out / 'checkpoint-8'}: optimizer.pt is empty") == 1
    assert log.count(f"resuming from {out / 'checkpoint-4'}") == 1
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    assert [log["step"] for log in state["log_history"] if "loss" in log] == list(range(1, 13))
    for step in (4, 8, 12):
        assert checkpoint_problem(out / f"checkpoint-{step}") is None, step


@pytest.mark.slow
def test_two_processes_report_a_bad_resume_once(tmp_path, tiny_clip_dir, tiny_rows):
    out = tmp_path / "empty_run"
    out.mkdir()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO_ROOT / "train.py"), *_train_args(tiny_clip_dir, tiny_rows, out),
                           "--resume_from_checkpoint", "last"],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "SIGABRT" not in done.stderr and "terminate called" not in done.stderr  # the error's own exit, no abort
    lines = [line for line in done.stderr.splitlines() if line.startswith("train.py: error:")]
    assert lines == [f"train.py: error: --resume_from_checkpoint last: no checkpoint in {out} can be resumed (it "
                     "has no checkpoint-* folder); start without --resume_from_checkpoint (add --overwrite_output_dir "
                     "if old folders remain)"]


# train.py's main() called in each of two processes, then a report of whether the process group is still open
TEARDOWN_WORKER = textwrap.dedent("""
    import gc, os, runpy, sys
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    sys.path.insert(0, {repo!r})
    main = runpy.run_path({train!r}, run_name="train_module")["main"]
    status = main(sys.argv[1:])
    wrappers = sum(isinstance(obj, DistributedDataParallel) for obj in gc.get_objects())
    print(f"rank {{os.environ['RANK']}}: status {{status}}, process group open after main: {{dist.is_initialized()}}, "
          f"DDP wrappers alive: {{wrappers}}")
""")


@pytest.mark.slow
def test_two_process_train_py_closes_its_process_group_before_exit(tmp_path, tiny_clip_dir, tiny_rows):
    """main() destroys its process group, and only after the DDP wrapper is gone.

    A gloo group left to interpreter shutdown aborted a process that finished first (SIGABRT, "terminate called
    without an active exception") in 4 of 13 minimal launches here; one destroyed while the wrapper's reducer
    still held it hung a process in 1 of 10 launches of this test under load (see end_distributed_run)."""
    script = tmp_path / "worker.py"
    script.write_text(TEARDOWN_WORKER.format(repo=str(REPO_ROOT), train=str(REPO_ROOT / "train.py")))
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), *_train_args(tiny_clip_dir, tiny_rows, out), "--max_steps", "2",
                           "--save_strategy", "no"],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    assert reports == [f"rank {rank}: status 0, process group open after main: False, DDP wrappers alive: 0"
                       for rank in (0, 1)]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
