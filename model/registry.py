"""The model registry: encoders by name (``--model``). A checkpoint written by this project records
``{"model": name, "model_args": {...}}`` and is rebuilt from them.

An encoder takes ``(batch, 1, 40, frames)`` log-mel crops and returns ``(batch, embedding)``; it
implements ``forward(x, lengths=None)`` (``lengths``: valid frames of zero-padded items, each output
as if run alone), holds the class weights the losses use as ``weight`` (num_classes x embedding) and
its constructor arguments as ``model_args``. Training builds it as
``cls(num_classes=..., backbone=..., channels=...)``. Adding one: a file in ``model/`` and a line here.
"""
from model.ecapa_tdnn import EcapaEncoder
from model.model import background_resnet

MODELS = {
    "background_resnet": background_resnet,
    "ecapa_tdnn": EcapaEncoder,       # not in the paper
}
DEFAULT_MODEL = "background_resnet"


def build_model(name: str, **model_args):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name](**model_args)


def model_name(model) -> str:
    """The registry name of ``model``'s class."""
    names = [name for name, cls in MODELS.items() if type(model) is cls or isinstance(model, cls)]
    if not names:
        raise ValueError(f"{type(model).__name__} is not a registered model ({', '.join(MODELS)})")
    return names[0]
