"""Publishing checkpoints: `hf-hardneg push` and the Trainer's hub options, captured at the huggingface_hub boundary.

Nothing reaches the network: ``HfApi.create_repo`` / ``repo_info`` / ``create_commit`` /
``upload_folder`` are replaced by fakes that record the call and write the committed files
into a local "remote" folder, which is then loaded back with ``from_pretrained``.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl

from hf_hardneg.cli import main
from hf_hardneg.hub import plan_push, push_checkpoint
from hf_hardneg.model_card import CARD_INPUTS_NAME, ModelCardCallback

from _card_run import RESULTS

SECRET = "hf_ThisIsAFakeTokenThatMustNeverBePrinted"
REPO = "someone/tiny-clip-color-hn1"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny CLIP trained 4 steps (checkpoints at 2 and 4) by HardNegCLIPTrainer with the card callback."""
    from _card_run import train_tiny

    out = tmp_path_factory.mktemp("push") / "color-hn1"
    trainer = train_tiny(out, callbacks=[ModelCardCallback(license="mit")], max_steps=4, save_steps=2)
    return SimpleNamespace(trainer=trainer, checkpoint=out / "checkpoint-4", base=out.parent / "color-hn1-base")


class FakeHub:
    """Records Hub calls; ``create_commit`` materialises the commit into ``remote``."""

    def __init__(self, remote: Path, existing_private: bool | None = None):
        self.remote = remote
        self.existing_private = existing_private  # None: the repo does not exist yet
        self.calls: list[tuple[str, dict]] = []
        self.uploads: list[dict] = []

    def create_repo(self, api, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if self.existing_private is None:
            self.existing_private = bool(kwargs.get("private"))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, api, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def repo_info(self, api, repo_id, **kwargs):
        self.calls.append(("repo_info", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(id=repo_id, private=self.existing_private)

    def create_commit(self, api, repo_id, operations, **kwargs):
        operations = list(operations)
        self.calls.append(("create_commit", {"repo_id": repo_id, "operations": operations, **kwargs}))
        for op in operations:
            target = self.remote / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            source = op.path_or_fileobj
            target.write_bytes(source if isinstance(source, bytes) else Path(source).read_bytes())
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abcd", commit_message=kwargs.get(
            "commit_message", ""), commit_description="", oid="0123abcd")

    def upload_folder(self, api, *, repo_id, folder_path, run_as_future=False, ignore_patterns=None,
                      path_in_repo=None, **kwargs):
        """The Trainer's upload: list what would go, as huggingface_hub filters it, at call time."""
        from huggingface_hub.utils import filter_repo_objects

        folder = Path(folder_path)
        names = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        kept = list(filter_repo_objects(names, ignore_patterns=list(ignore_patterns or []) + [".git", ".git/*"]))
        readme = folder / "README.md"
        self.uploads.append({"repo_id": repo_id, "path_in_repo": path_in_repo, "files": sorted(kept),
                             "readme": readme.read_text(encoding="utf-8") if "README.md" in kept else None})
        info = CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abcd", commit_message="",
                          commit_description="", oid="0123abcd")
        if run_as_future:
            future: Future = Future()
            future.set_result(info)
            return future
        return info

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def committed(self) -> dict[str, bytes]:
        (_, commit), = [c for c in self.calls if c[0] == "create_commit"]
        return {op.path_in_repo: (self.remote / op.path_in_repo).read_bytes() for op in commit["operations"]}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    fake = FakeHub(tmp_path / "remote")
    for name in ("create_repo", "create_branch", "repo_info", "create_commit", "upload_folder"):
        method = getattr(fake, name)
        monkeypatch.setattr(HfApi, name, lambda api, *a, _m=method, **kw: _m(api, *a, **kw))
    return fake


def _copy(checkpoint: Path, dest: Path, drop=()) -> Path:
    shutil.copytree(checkpoint, dest, ignore=shutil.ignore_patterns(*drop))
    return dest


def test_push_commits_a_loadable_safetensors_checkpoint_with_its_card(run, hub):
    before = {p.name: p.read_bytes() for p in run.checkpoint.iterdir()}
    info = push_checkpoint(run.checkpoint, REPO, private=True)
    assert info.commit_url.endswith("/commit/0123abcd")
    assert hub.names() == ["create_repo", "repo_info", "create_commit"]
    assert hub.calls[0][1]["private"] is True and hub.calls[0][1]["exist_ok"] is True

    committed = hub.committed()
    assert set(committed) == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                              "preprocessor_config.json", "README.md", CARD_INPUTS_NAME}
    assert not [n for n in committed if n.endswith(PICKLE_SUFFIXES)]
    # the checkpoint folder itself is left as the trainer wrote it
    assert {p.name: p.read_bytes() for p in run.checkpoint.iterdir()} == before

    card = ModelCard(committed["README.md"].decode("utf-8"))
    assert f'.from_pretrained("{REPO}")' in card.text and card.data.license == "mit"
    assert json.loads(committed[CARD_INPUTS_NAME])["model_id"] == REPO

    # what a user gets: CLIPModel / CLIPProcessor (and the Auto classes) load the repo and score as trained
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, CLIPModel, CLIPProcessor

    from _card_run import CAPTIONS, COLOURS

    model = CLIPModel.from_pretrained(hub.remote).eval()
    processor = CLIPProcessor.from_pretrained(hub.remote)
    AutoModel.from_pretrained(hub.remote), AutoTokenizer.from_pretrained(hub.remote)
    AutoImageProcessor.from_pretrained(hub.remote)
    inputs = processor(text=CAPTIONS, images=[Image.new("RGB", (40, 40), c) for c in COLOURS],
                       return_tensors="pt", padding=True, truncation=True)
    trained = run.trainer.model.eval()
    with torch.no_grad():
        expected = trained(**inputs).logits_per_image
        got = model(**inputs).logits_per_image
    torch.testing.assert_close(got, expected)
    base = CLIPModel.from_pretrained(run.base).eval()
    with torch.no_grad():
        assert not torch.allclose(base(**inputs).logits_per_image, expected)  # training changed the model


def test_cli_push_never_prints_the_token(run, hub, capsys):
    assert main(["push", "--checkpoint", str(run.checkpoint), "--repo-id", REPO]) == 0
    out, err = capsys.readouterr()
    assert "pushed" in out and REPO in out and "+ model.safetensors" in out
    assert "- optimizer.pt: optimizer state (resume only)" in out
    assert SECRET not in out + err
    assert all(SECRET.encode() not in blob for blob in hub.committed().values())


def test_dry_run_sends_nothing(run, hub, capsys):
    assert main(["push", "--checkpoint", str(run.checkpoint), "--repo-id", REPO, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was uploaded" in out and "+ README.md" in out and "- training_args.bin" in out
    assert hub.calls == []


def test_results_go_into_the_pushed_card(run, hub, tmp_path):
    results = tmp_path / "eval" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps(RESULTS), encoding="utf-8")
    assert main(["push", "--checkpoint", str(run.checkpoint), "--repo-id", REPO, "--results", str(results)]) == 0
    card = ModelCard(hub.committed()["README.md"].decode("utf-8"))
    assert card.data.model_name == REPO.split("/")[1]
    assert {r.metric_value for r in card.data.eval_results} >= {0.8125, 0.6, 0.89}
    assert "| concept | COCO val2017 | color | accuracy | 0.812 | 3,907 |" in card.text


def test_pickled_weights_are_refused(run, hub, tmp_path, capsys):
    folder = _copy(run.checkpoint, tmp_path / "pickled", drop=["model.safetensors"])
    torch.save(run.trainer.model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"weights only as pytorch_model.bin \(not safetensors\).*save_pretrained"):
        plan_push(folder, REPO)
    assert main(["push", "--checkpoint", str(folder), "--repo-id", REPO]) == 2
    assert "safetensors only" in capsys.readouterr().err
    assert hub.calls == []


def test_any_other_pickle_file_is_refused_by_name(run, tmp_path):
    folder = _copy(run.checkpoint, tmp_path / "extra")
    (folder / "embeddings.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match=r"\['embeddings.pkl'\]: pickle files.*already in model.safetensors"):
        plan_push(folder, REPO)


def test_broken_or_missing_weights_are_refused(run, tmp_path):
    folder = _copy(run.checkpoint, tmp_path / "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        plan_push(folder, REPO)
    with pytest.raises(ValueError, match="no model.safetensors"):
        plan_push(_copy(run.checkpoint, tmp_path / "none", drop=["model.safetensors"]), REPO)
    with pytest.raises(ValueError, match="no config.json"):
        plan_push(_copy(run.checkpoint, tmp_path / "noconfig", drop=["config.json"]), REPO)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_push(tmp_path / "nowhere", REPO)


def test_missing_image_processor_is_refused_then_added_from_the_base(run, hub, tmp_path):
    folder = _copy(run.checkpoint, tmp_path / "noprocessor", drop=["preprocessor_config.json"])
    with pytest.raises(ValueError, match=r"image processor.*--processor-from"):
        plan_push(folder, REPO)
    push_checkpoint(folder, REPO, processor_from=run.base)
    assert "preprocessor_config.json" in hub.committed()
    from transformers import CLIPProcessor

    CLIPProcessor.from_pretrained(hub.remote)


def test_branch_and_default_visibility(run, hub):
    push_checkpoint(run.checkpoint, REPO, revision="step-4")
    assert hub.names() == ["create_repo", "create_branch", "create_commit"]
    assert hub.calls[0][1]["private"] is None  # not forced public: the account's default applies
    assert hub.calls[1][1]["branch"] == "step-4" and hub.calls[2][1]["revision"] == "step-4"


def test_private_push_to_an_existing_public_repo_is_refused(run, hub):
    hub.existing_private = False
    with pytest.raises(PermissionError, match="already exists and is public"):
        push_checkpoint(run.checkpoint, REPO, private=True)
    assert "create_commit" not in hub.names()


def test_hub_failure_is_reported_without_traceback(run, hub, monkeypatch, capsys):
    from huggingface_hub.errors import OfflineModeIsEnabled

    def offline(api, *args, **kwargs):
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    assert main(["push", "--checkpoint", str(run.checkpoint), "--repo-id", REPO]) == 1
    err = capsys.readouterr().err
    assert "upload failed: OfflineModeIsEnabled" in err and SECRET not in err


def test_not_logged_in(run, hub, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["push", "--checkpoint", str(run.checkpoint), "--repo-id", REPO]) == 2
    assert "hf auth login" in capsys.readouterr().err
    assert hub.calls == []


def test_a_readme_that_hf_hardneg_did_not_write_is_kept(run, hub, tmp_path):
    folder = _copy(run.checkpoint, tmp_path / "own-card", drop=["README.md", CARD_INPUTS_NAME])
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# my own words\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not written by hf_hardneg"):
        plan_push(folder, REPO, results=RESULTS)
    push_checkpoint(folder, REPO)
    assert hub.committed()["README.md"] == (folder / "README.md").read_bytes()


def test_a_folder_without_card_gets_one_from_its_files(run, hub, tmp_path):
    folder = _copy(run.checkpoint, tmp_path / "bare", drop=["README.md", CARD_INPUTS_NAME])
    push_checkpoint(folder, REPO)
    card = ModelCard(hub.committed()["README.md"].decode("utf-8"))
    assert "step 4 of 4" in card.text and "CLIPProcessor.from_pretrained" in card.text


@pytest.mark.slow
def test_trainer_hub_options_upload_the_hard_negative_card(tmp_path, hub):
    """push_to_hub / hub_model_id / hub_strategy / hub_private_repo with HardNegCLIPTrainer."""
    from _card_run import train_tiny

    out = tmp_path / "hub-run"
    trainer = train_tiny(out, callbacks=[ModelCardCallback(license="mit")], max_steps=4, save_steps=2,
                         push_to_hub=True, hub_model_id=REPO, hub_strategy="checkpoint", hub_private_repo=True)
    (_, repo), = [c for c in hub.calls if c[0] == "create_repo"]
    assert repo["repo_id"] == REPO and repo["private"] is True

    # one push of the run folder and one of "last-checkpoint" per save, each with the current card
    assert [u["path_in_repo"] for u in hub.uploads] == [None, "last-checkpoint", None, "last-checkpoint"]
    for upload, step in zip(hub.uploads, (2, 2, 4, 4)):
        assert "model.safetensors" in upload["files"] and not [f for f in upload["files"] if f.startswith("pytorch_model")]
        card = ModelCard(upload["readme"])
        assert "hf_hardneg" in card.data.tags and f"step {step} of 4" in card.text

    hub.uploads.clear()
    trainer.push_to_hub()
    (final,) = hub.uploads
    assert {"model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json", "README.md"} <= set(final["files"])
    card = ModelCard(final["readme"])
    assert "hf_hardneg" in card.data.tags and f'.from_pretrained("{REPO}")' in card.text
