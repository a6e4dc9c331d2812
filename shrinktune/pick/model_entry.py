"""The code MLflow runs to build a registered summarizer (its "model from code", see `shrinktune.pick.model`).

Never imported by shrinktune: MLflow copies this file into every summarizer model it saves and executes it when the
model is loaded, after putting the model's copy of the package on the path.
"""

from mlflow.models import set_model

from shrinktune.pick.model import SummarizerModel

set_model(SummarizerModel())
