"""Every compression method on every task kind: one trial each on a tiny local teacher and a corpus the test
writes, scored with the kind's metric, saved as a checkpoint that loads and answers."""

import json

import pytest

from shrinktune import load_summarizer
from shrinktune.errors import ConfigError
from shrinktune.models.generation import GenerationSettings
from shrinktune.search.trial import TrialContext, prepare_reference, run_configuration
from shrinktune.settings import EvaluationSettings, TrialSettings

WORDS = ["haus", "katze", "hund", "baum", "auto", "buch", "tisch", "stuhl"]
ENGLISH = ["house", "cat", "dog", "tree", "car", "book", "table", "chair"]
LABELS = ["animal", "object"]


def _translation(folder):
    import datasets

    def split(n, offset):
        rows = [{"de": f"das {WORDS[(i + offset) % 8]} und der {WORDS[(3 * i + offset) % 8]}",
                 "en": f"the {ENGLISH[(i + offset) % 8]} and the {ENGLISH[(3 * i + offset) % 8]}"} for i in range(n)]
        return datasets.Dataset.from_dict({"translation": rows})

    datasets.DatasetDict({"train": split(24, 0), "validation": split(6, 1), "test": split(6, 2)}).save_to_disk(folder)
    return {"name": "tiny-de-en", "kind": "translation", "dataset": str(folder), "source_language": "de",
            "target_language": "en", "max_source_tokens": 16, "max_target_tokens": 12}


def _classification(folder):
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "topic": datasets.ClassLabel(names=LABELS)})

    def split(n, offset):
        words = [ENGLISH[(i + offset) % 8] for i in range(n)]
        return datasets.Dataset.from_dict(
            {"sentence": [f"we saw the {w} today" for w in words],
             "topic": [int(w not in ("cat", "dog")) for w in words]}, features=features)

    datasets.DatasetDict({"train": split(24, 0), "validation": split(6, 1), "test": split(6, 2)}).save_to_disk(folder)
    return {"name": "tiny-topics", "kind": "classification", "dataset": str(folder), "text_column": "sentence",
            "label_column": "topic", "max_source_tokens": 16, "max_target_tokens": 4}


CORPORA = {"translation": (_translation, "bleu"), "classification": (_classification, "accuracy")}
METHODS = {
    "kd, hidden states, a dropped encoder layer": {"latent_dim": 32, "decoder_layers": 1, "encoder_layers": 2,
                                                  "method": "kd", "kd_alpha_hid": 1.0},
    "pseudo-labels, PCA bottleneck": {"latent_dim": 16, "decoder_layers": 1, "ae_kind": "pca",
                                      "method": "pseudo_labels"},
    "joint bottleneck, shortlist": {"latent_dim": 16, "decoder_layers": 1, "ae_mode": "joint",
                                    "output_vocab": "training"},
    "svd weights": {"latent_dim": 32, "decoder_layers": 2, "weight_compression": "svd", "weight_ratio": 2.0},
    "ae weights, asymmetric layer map": {"latent_dim": 16, "decoder_layers": 2, "layer_map": "asymmetric",
                                         "weight_compression": "ae", "weight_ratio": 2.0},
}


@pytest.fixture(scope="module", params=sorted(CORPORA))
def prepared(request, tmp_path_factory, tiny_teacher_dir):
    kind = request.param
    folder = tmp_path_factory.mktemp(kind)
    make, metric = CORPORA[kind]
    ctx = TrialContext(task=make(folder / "corpus"), teacher_dir=str(tiny_teacher_dir),
                       cache_root=str(folder / "cache"), generation=GenerationSettings(max_new_tokens=6), threads=1,
                       evaluation=EvaluationSettings(samples=6, latency_samples=1, latency_repeats=1, latency_cap_s=1,
                                                     fixed_new_tokens=4),
                       defaults=TrialSettings(batch_size=8, ae_epochs=1, epochs=1, learning_rate=1e-3))
    teacher_dir, reference = prepare_reference(ctx)
    assert metric in reference and "rouge1" not in reference
    return kind, metric, ctx.__class__(**{**ctx.__dict__, "teacher_dir": teacher_dir, "reference": reference}), folder


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_a_student_of_every_kind(prepared, method):
    kind, metric, ctx, folder = prepared
    checkpoint = folder / method.replace(" ", "_").replace(",", "")
    metrics = run_configuration(METHODS[method], ctx, checkpoint)
    assert metric in metrics and "rouge1" not in metrics, sorted(metrics)
    assert metrics["train_loss"] > 0 and metrics["params_decoder"] < ctx.reference["params_decoder"]
    if METHODS[method].get("method") == "pseudo_labels":
        labels = list((folder / "cache" / "pseudo-labels").glob("*/pseudo_labels.json"))
        assert len(labels) == 1 and len(json.loads(labels[0].read_text())) > 0
    if METHODS[method].get("weight_compression", "none") != "none":
        assert metrics["weight_params_after"] * 2 <= metrics["weight_params_before"]
    saved = json.loads((checkpoint / "shrinktune_trial.json").read_text())
    assert saved["kind"] == kind and saved["metrics"][metric] == metrics[metric]
    answer = load_summarizer(checkpoint)("we saw the cat today" if kind == "classification" else "das haus")
    assert isinstance(answer, str)


def test_windows_are_refused_for_a_kind_without_documents(prepared):
    kind, _, ctx, folder = prepared
    with pytest.raises(ConfigError, match="pseudo_label_windows"):
        run_configuration({"latent_dim": 16, "decoder_layers": 1, "method": "pseudo_labels",
                           "pseudo_label_windows": 2}, ctx, folder / "windows")
