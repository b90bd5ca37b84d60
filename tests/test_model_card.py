"""Model cards: template, metadata (model-index), hyperparameter diff, and the card the trainer writes at every save."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from huggingface_hub import ModelCard

from hf_hardneg.model_card import (
    CARD_INPUTS_NAME,
    ModelCardCallback,
    ModelCardInputs,
    create_model_card,
    describe_concepts,
    eval_results_to_model_index,
    load_model_card_inputs,
    non_default_hyperparameters,
    write_model_card,
)

from _card_run import RESULTS


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"section {title!r} missing from the card"
    return match.group(1)


def test_template_ships_with_the_package():
    from importlib import resources

    assert resources.files("hf_hardneg").joinpath("templates", "model_card.md.j2").is_file()


def test_card_metadata_and_body_from_a_run_record():
    record = ModelCardInputs(
        model_name="clip-color-hn1",
        model_id="someone/clip-color-hn1",
        base_model="openai/clip-vit-base-patch32",
        architecture="CLIPModel",
        processor_class="CLIPProcessor",
        datasets=["someone/coco-captions"],
        training_data="COCO 2017 train captions.",
        num_train_rows=92006,
        concept_subsets={"color": 92006},
        num_hard_negatives=2,
        hard_negative_mode="replace",
        concepts=["color"],
        substitution_seed=3,
        hyperparameters={"bf16": True},
        per_device_batch_size=64,
        num_processes=2,
        gradient_accumulation_steps=1,
        hardware="2 x NVIDIA H100 80GB HBM3",
        training_time_s=3725,
        global_step=900,
        max_steps=2700,
        epoch=1.0,
        eval_results=RESULTS,
        license="mit",
    )
    card = create_model_card(record)
    reloaded = ModelCard(str(card))  # what the Hub parses
    data = reloaded.data
    assert data.base_model == "openai/clip-vit-base-patch32"
    assert data.datasets == ["someone/coco-captions"]
    assert data.license == "mit"
    assert data.library_name == "transformers"
    assert {"hf_hardneg", "hard-negatives", "concept-color"} <= set(data.tags)
    # model-index: every headline number of the results, with its dataset and subset
    assert data.model_name == "clip-color-hn1"
    found = {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results}
    assert found[("coco-val2017", "color", "accuracy")] == 0.8125
    assert found[("coco-val2017", "t2i", "recall@5")] == 0.6
    assert found[("phiyodr/InpaintCOCO", "color", "image_score")] == 0.89
    assert len(data.eval_results) == len(eval_results_to_model_index(RESULTS))

    text = reloaded.text
    assert text.startswith("\n# clip-color-hn1\n")
    assert '.from_pretrained("someone/clip-color-hn1")' in text and "CLIPProcessor.from_pretrained" in text
    data_section = _section(text, "Training data")
    assert "| color | 92,006 |" in data_section and "**92,006**" in data_section
    hard = _section(text, "Hard negatives")
    assert "| Hard negatives per image (k) | 2 |" in hard and "`replace`" in hard
    assert "| color | 9 |" in hard  # the paper's nine colour words
    assert "| Substitution seed | 3 |" in hard
    procedure = _section(text, "Training procedure")
    assert "| `bf16` | `True` |" in procedure
    assert "**128** image-caption pairs per optimiser step" in procedure
    assert "| 2 x NVIDIA H100 80GB HBM3 | 1 h 02 min | step 900 of 2,700, epoch 1.00 |" in procedure
    evaluation = _section(text, "Evaluation")
    assert "| concept | COCO val2017 | color | accuracy | 0.812 | 3,907 |" in evaluation
    assert "| inpaintcoco | InpaintCOCO | color | image_score | 0.890 | 465 |" in evaluation
    limitations = _section(text, "Limitations")
    for needle in ("Western", "English", "picked by hand"):
        assert needle in limitations
    citation = _section(text, "Citation")
    assert "2403.02875" in citation and "InpaintCOCO" in citation and "1405.0312" in citation


def test_unrecorded_values_are_stated_not_guessed():
    card = create_model_card(ModelCardInputs())
    text = card.text
    assert "The training set was not recorded." in text
    assert "hard-negative settings of this run were not recorded" in text
    assert "| not recorded | not recorded | not recorded |" in text
    assert "No evaluation results were recorded" in text
    assert "No license was recorded" in text
    assert card.data.license is None and card.data.get("base_model") is None and card.data.eval_results is None


def test_a_local_base_model_is_named_by_its_hub_id_where_known_else_by_its_folder(tmp_path):
    from hf_hardneg.model_card import _model_source

    snapshot = tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / "3d74acf9"
    snapshot.mkdir(parents=True)
    assert _model_source(str(snapshot)) == "openai/clip-vit-base-patch32"
    pushed = tmp_path / "runs" / "hn1"
    pushed.mkdir(parents=True)
    (pushed / CARD_INPUTS_NAME).write_text(json.dumps({"model_id": "someone/clip-hn1"}), encoding="utf-8")
    assert _model_source(str(pushed)) == "someone/clip-hn1"
    assert _model_source(str(tmp_path / "runs")) == "runs"
    assert _model_source("openai/clip-vit-base-patch32") == "openai/clip-vit-base-patch32"


def test_classic_baseline_and_local_base_model(tmp_path):
    card = create_model_card(num_hard_negatives=0, concepts=["size"], base_model=str(tmp_path))
    assert "classical contrastive baseline" in card.text
    assert card.data.get("base_model") is None  # a local folder is not a Hub id
    assert f"`{tmp_path}`" in card.text


def test_only_changed_hyperparameters_and_never_tokens(tmp_path):
    from hf_hardneg.config import HardNegCLIPConfig

    assert non_default_hyperparameters(HardNegCLIPConfig(output_dir=str(tmp_path))) == {}
    args = HardNegCLIPConfig(
        output_dir=str(tmp_path / "elsewhere"),  # bookkeeping: not a hyperparameter
        learning_rate=1e-5,
        weight_decay=0.1,  # the default: left out
        per_device_train_batch_size=32,
        num_hard_negatives=3,  # shown in the hard-negative section instead
        logging_steps=7,
        hub_token="hf_do_not_leak_me",
        report_to="none",
    )
    assert non_default_hyperparameters(args) == {"learning_rate": 1e-05, "per_device_train_batch_size": 32}
    text = str(create_model_card(hyperparameters=non_default_hyperparameters(args), config_class="HardNegCLIPConfig"))
    assert "hf_do_not_leak_me" not in text and "| `learning_rate` | `1e-05` |" in text


def test_concepts_are_described_from_names_objects_and_files(tmp_path):
    from hf_hardneg.concepts import Concept

    concept_file = tmp_path / "garments.yaml"
    concept_file.write_text("concepts:\n  - name: garment\n    words: [shirt, dress, jacket]\n", encoding="utf-8")
    described = describe_concepts(["object", Concept.from_list("fit", ["tight", "loose"]), str(concept_file), "nope"])
    assert described["object"]["keywords"] == 80
    assert described["fit"] == {"keywords": 2, "examples": "tight → loose, loose → tight"}
    assert described["garment"]["keywords"] == 3
    assert described["nope"]["keywords"] is None
    from hf_hardneg.concepts import COLOR, SIZE

    # a combined concept counts the keywords of both parts (colour and size words do not overlap)
    combined = ModelCardInputs(concepts=["color+size"]).concepts["color+size"]
    assert combined["keywords"] == len(COLOR.keywords) + len(SIZE.keywords)


def test_record_round_trip_re_renders_the_same_card(tmp_path):
    record = ModelCardInputs(model_name="x", concepts=["color"], num_hard_negatives=1, eval_results=RESULTS)
    readme = write_model_card(tmp_path, record)
    assert readme == tmp_path / "README.md"
    assert load_model_card_inputs(tmp_path) == record
    assert str(create_model_card(load_model_card_inputs(tmp_path))) == readme.read_text(encoding="utf-8")
    assert load_model_card_inputs(tmp_path / "missing") is None
    (tmp_path / CARD_INPUTS_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model_card_inputs(tmp_path)


def test_callback_rejects_unknown_fields():
    with pytest.raises(TypeError, match="licence"):
        ModelCardCallback(licence="mit")


@pytest.mark.slow
def test_trainer_writes_a_card_into_every_checkpoint(tmp_path):
    from _card_run import train_tiny

    out = tmp_path / "color-hn1"
    callback = ModelCardCallback(license="mit", datasets=["someone/coco-captions"], eval_results=RESULTS)
    trainer = train_tiny(out, callbacks=[callback], max_steps=4, save_steps=2)

    expected_counts = Counter(trainer.train_dataset["hard_negative_concept"])
    for step in (2, 4):
        folder = out / f"checkpoint-{step}"
        card = ModelCard.load(folder / "README.md")
        record = json.loads((folder / CARD_INPUTS_NAME).read_text(encoding="utf-8"))
        assert record["global_step"] == step
        assert f"step {step} of 4" in card.text
        assert record["concept_subsets"] == dict(expected_counts) and record["num_train_rows"] == len(trainer.train_dataset)
        # exactly what the run changed from HardNegCLIPConfig's defaults (bookkeeping left out)
        assert record["hyperparameters"] == {"learning_rate": 0.001, "max_steps": 4, "per_device_train_batch_size": 4}
        # a local base model is named by its folder, never by the machine's path (the card gets published)
        assert record["base_model"] == "color-hn1-base"
        assert str(tmp_path) not in card.content and str(tmp_path) not in json.dumps(record)
        assert record["architecture"] == "CLIPModel" and record["processor_class"] == "CLIPProcessor"
        assert record["hardware"].startswith("CPU") and record["training_time_s"] > 0
        assert card.data.license == "mit" and card.data.datasets == ["someone/coco-captions"]
        assert card.data.eval_results and card.data.model_name == "color-hn1"
    # the run folder gets the final card too (what push_to_hub uploads)
    assert "step 4 of 4" in (out / "README.md").read_text(encoding="utf-8")


def test_rendered_example_matches_the_template():
    """model_cards/ documents the card with a rendered example: it must parse and have today's sections."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "model_cards" / "example-tiny-clip-color-hn1.md"
    card = ModelCard.load(example)
    assert card.data.eval_results and card.data.library_name == "transformers"
    headings = lambda text: re.findall(r"^## (.+)$", text, re.M)  # noqa: E731
    current = create_model_card(ModelCardInputs(num_hard_negatives=1, concepts=["color"], versions={"x": "1"}))
    assert headings(card.text) == headings(current.text), "re-render model_cards/example-*.md (see model_cards/README.md)"


def test_custom_template(tmp_path):
    template = tmp_path / "card.md.j2"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }} ({{ hard_negatives.num_hard_negatives }})\n",
                        encoding="utf-8")
    card = create_model_card(ModelCardInputs(model_name="mine", num_hard_negatives=2, license="mit"), template=template)
    assert card.text == "# mine (2)\n" and card.data.license == "mit"
    template.write_text("---\n{{ card_data }}\n---\n{{ modle_name }}\n", encoding="utf-8")
    import jinja2

    with pytest.raises(jinja2.UndefinedError, match="modle_name"):
        create_model_card(ModelCardInputs(), template=template)


def test_trainer_registers_the_card_callback_itself_and_save_model_writes_a_card(tmp_path):
    """No callback passed: checkpoints and `save_model(dir)` still get a card (publishable as they are)."""
    from _card_run import train_tiny

    out = tmp_path / "plain"
    trainer = train_tiny(out, max_steps=2, save_steps=2)
    assert sum(isinstance(cb, ModelCardCallback) for cb in trainer.callback_handler.callbacks) == 1
    assert ModelCard.load(out / "checkpoint-2" / "README.md").data.library_name
    final = tmp_path / "exported"
    trainer.save_model(str(final))
    assert (final / "model.safetensors").is_file()
    assert "step 2 of 2" in (final / "README.md").read_text(encoding="utf-8")
