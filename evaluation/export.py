"""``export.py``: a trained encoder as TorchScript (encoder.pt) and ONNX (encoder.onnx), with
``encoder.json`` describing the input, output and the feature recipe a deployment must reproduce."""
import io
import json
import sys
import warnings
from pathlib import Path

import torch

from common.errors import UserInputError
from common.files import atomic_path, write_text
from common.preflight import check_replaceable, check_room
from feat_extract import fbank as recipe
from model.checkpoint import load_encoder, model_fields, resolve_checkpoint, trained_epochs

FORMATS = ("torchscript", "onnx")
FILE_NAMES = {"torchscript": "encoder.pt", "onnx": "encoder.onnx"}
METADATA_NAME = "encoder.json"
EXPORT_FILES = (*FILE_NAMES.values(), METADATA_NAME)   # an export in a folder: any of these
INPUT_NAME, OUTPUT_NAME = "features", "embedding"
ONNX_OPSET = 17
EXAMPLE_FRAMES = 200


def example_input(device="cpu") -> torch.Tensor:
    return torch.zeros(1, 1, recipe.N_MELS, EXAMPLE_FRAMES, device=device)


def export_torchscript(model, path: Path) -> str:
    """Scripted module (shape-generic); tracing as a fallback (convolutions and means stay generic)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated, still loadable
        try:
            module, how = torch.jit.script(model), "scripted"
        except Exception:  # noqa: BLE001 - scripting can fail on exotic modules; tracing still works here
            module, how = torch.jit.trace(model, example_input()), "traced"
    write_bytes(path, ".pt", lambda buffer: buffer.write(module.save_to_buffer()))
    return how


def write_bytes(path: Path, suffix: str, serialise) -> None:
    """Serialise into memory, then write through Python: torch's C++ file writer aborts the whole
    process when the disk fills up; a Python write raises OSError, which becomes one error line."""
    buffer = io.BytesIO()
    serialise(buffer)
    with atomic_path(path, suffix) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def export_onnx(model, path: Path) -> str:
    """ONNX with dynamic ``batch`` and ``frames`` axes (legacy TorchScript-based exporter)."""
    def serialise(buffer):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example_input(),), buffer, dynamo=False, external_data=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=ONNX_OPSET,
                              dynamic_axes={INPUT_NAME: {0: "batch", 3: "frames"}, OUTPUT_NAME: {0: "batch"}})
    write_bytes(path, ".onnx", serialise)
    return f"opset {ONNX_OPSET}"


def metadata(checkpoint_path, checkpoint, model, written) -> dict:
    return {
        "checkpoint": str(checkpoint_path),
        "epoch": trained_epochs(checkpoint, checkpoint_path),
        **model_fields(model),
        "encoder": {"backbone": model.backbone, "channels": model.channels, "num_classes": model.num_classes},
        "input": {"name": INPUT_NAME, "shape": ["batch", 1, recipe.N_MELS, "frames"], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", model.embedding_size], "dtype": "float32"},
        "embedding_size": model.embedding_size,
        "sample_rate": recipe.SAMPLE_RATE,
        "feature_recipe": {
            "function": "feat_extract.fbank.log_mel_fbank",
            "channels": "mono", "samples": "int16 scale (float input in [-1, 1] times 32768)",
            "n_mels": recipe.N_MELS, "win_length_s": recipe.WIN_LENGTH, "win_step_s": recipe.WIN_STEP,
            "n_fft": recipe.N_FFT, "preemphasis": recipe.PREEMPHASIS, "window": "hamming",
            "log": f"20*log10(max(mel_energy, {recipe.LOG_FLOOR}))",
            "normalisation": "subtract the per-filter mean over the utterance",
            "layout": "features (frames, 40) transposed to (1, 1, 40, frames)",
        },
        "score": "cosine similarity of two embeddings",
        "files": written,
    }


def check_out(out_dir, overwrite: bool = False) -> list:
    """Before the checkpoint is read: ``--out`` is a folder (a name such as ``x.onnx`` is refused), and
    an earlier export in it is replaced only with ``overwrite``; the export files found there."""
    if Path(out_dir).suffix.lower() in (".onnx", ".pt", ".pth") and not Path(out_dir).is_dir():
        raise UserInputError(f"--out {out_dir}: --out is a folder (export.py writes {', '.join(EXPORT_FILES)} into "
                             f"it), not a file name; give a folder such as {Path(out_dir).with_suffix('')}")
    return check_replaceable(out_dir, EXPORT_FILES, "--out", overwrite)


def export(checkpoint_path, out_dir, formats=FORMATS, overwrite: bool = False) -> dict:
    """Write the requested formats and ``encoder.json`` into ``out_dir``; returns the metadata. An
    earlier export there is refused unless ``overwrite``; then each file is replaced atomically,
    ``encoder.json`` last, and an earlier format not written this time is removed."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UserInputError(f"unknown --format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    earlier = check_out(out_dir, overwrite)
    model, checkpoint = load_encoder(checkpoint_path, device="cpu")
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    out_dir = check_room(out_dir, len(formats) * weights + 1024 * 1024, "the exported model files")
    exporters = {"torchscript": export_torchscript, "onnx": export_onnx}
    written = {}
    for name in formats:
        how = exporters[name](model, out_dir / FILE_NAMES[name])
        written[name] = {"file": FILE_NAMES[name], "how": how}
    info = metadata(checkpoint_path, checkpoint, model, written)
    write_text(out_dir / METADATA_NAME, json.dumps(info, indent=2) + "\n")
    for stale in set(earlier) - {FILE_NAMES[name] for name in formats} - {METADATA_NAME}:
        (out_dir / stale).unlink(missing_ok=True)   # the earlier model's: encoder.json no longer lists it
    return info


def export_checkpoint(args) -> dict:
    """export.py's work for its parsed flags: the files written and reported; the metadata."""
    checkpoint_path = resolve_checkpoint(args.n_folder, args.cp_num, args.checkpoint, args.model_dir)
    info = export(checkpoint_path, args.out, args.format, getattr(args, "overwrite", False))
    for name, entry in info["files"].items():
        print(f"wrote {Path(args.out) / entry['file']} ({name}, {entry['how']})", file=sys.stderr)
    print(f"wrote {Path(args.out) / METADATA_NAME}", file=sys.stderr)
    return info
