"""The model registry: encoders by name (``--model``). A checkpoint written by this project records
``{"model": name, "model_args": {...}}`` and is rebuilt from them.

An encoder takes ``(batch, 1, 40, frames)`` log-mel crops and returns ``(batch, embedding)``; it
implements ``forward(x, lengths=None)`` (``lengths``: valid frames of zero-padded items, each output
as if run alone), holds the class weights the losses use as ``weight`` (num_classes x embedding) and
its constructor arguments as ``model_args``. Training builds it as
``cls(num_classes=..., backbone=..., channels=...)``, ``channels`` from ``DEFAULT_ARGS`` when
``--channels`` is left out. Adding one: a file in ``model/`` and a line in ``MODELS`` and in
``DEFAULT_ARGS``.
"""
from model.ecapa_tdnn import EcapaEncoder
from model.model import background_resnet

MODELS = {
    "background_resnet": background_resnet,
    "ecapa_tdnn": EcapaEncoder,       # not in the paper
}
DEFAULT_MODEL = "background_resnet"
DEFAULT_ARGS = {   # each model's own defaults for the flags left out (train.py --channels)
    "background_resnet": {"channels": 32},   # the paper's ResNet-34 (256-d pooled features)
    "ecapa_tdnn": {"channels": 512},         # the ECAPA-TDNN paper's smaller size (1024: the larger)
}


def default_args(name: str) -> dict:
    """The constructor arguments model ``name`` gets when train.py's flags leave them out."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return dict(DEFAULT_ARGS[name])


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


def describe_model(model) -> str:
    """One line saying what was built: ``built background_resnet (resnet34, channels 32): 1,234,567
    parameters (1,000,000 without the class weights)``."""
    args = dict(model.model_args)
    args.pop("num_classes", None)
    shape = ", ".join(str(value) if key == "backbone" else f"{key} {value}" for key, value in args.items())
    total = sum(p.numel() for p in model.parameters())
    encoder = total - model.weight.numel()
    return f"built {model_name(model)} ({shape}): {total:,} parameters ({encoder:,} without the class weights)"
