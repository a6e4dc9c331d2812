"""The embedded teacher the package ships: written small, read back faithfully, and matching today's recipe."""

import torch

from shrinktune.data.tasks import get_task, load_task_splits
from shrinktune.models.teacher import build_bert2bert
from shrinktune.training.teacher import (
    SHIPPED_TEACHER,
    TeacherRecipe,
    load_shipped_teacher,
    save_shipped_teacher,
    shipped_matches,
    teacher_key,
)


def test_shipped_decoder_round_trips_and_fits_in_20_mb(tmp_path):
    model, _ = build_bert2bert()
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: every decoder tensor but the word embeddings moves
        for name, tensor in model.decoder.named_parameters():
            if "word_embeddings" not in name:
                tensor.add_(0.05 * torch.randn_like(tensor))
    path = save_shipped_teacher(model, tmp_path / "teacher.safetensors", {"key": "abc"})
    assert path.stat().st_size < 20 * 2**20
    assert shipped_matches("abc", path) and not shipped_matches("other", path)
    assert not shipped_matches("abc", tmp_path / "missing.safetensors")

    loaded, _, metadata = load_shipped_teacher(path)
    assert metadata["key"] == "abc"
    for (name, original), (_, back) in zip(model.decoder.named_parameters(), loaded.decoder.named_parameters()):
        step = original.detach().abs().amax(dim=-1, keepdim=True) / 127 if original.dim() == 2 else 1e-2
        assert torch.all((back - original).abs() <= step), name  # int8 rows: within one step; vectors fp16
    assert torch.equal(loaded.decoder.get_input_embeddings().weight, model.decoder.get_input_embeddings().weight)


def test_the_shipped_file_is_the_default_recipe_on_todays_data():
    """Changing the recipe, the data or the task lengths without `python -m platform.prepare_teacher` would make
    every fresh machine train the teacher for minutes."""
    task = get_task("summarization")
    train = load_task_splits(task, ("train",))["train"]
    assert SHIPPED_TEACHER.is_file(), "run python -m platform.prepare_teacher"
    assert shipped_matches(teacher_key(task, train, TeacherRecipe()))
