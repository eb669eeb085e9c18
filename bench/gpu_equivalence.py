"""How far the GPU's embeddings are from the CPU's, per precision mode, and ONNX Runtime from PyTorch.

    python bench/gpu_equivalence.py --checkpoint CP --onnx exported/encoder.onnx --json out.json

One checkpoint embeds the same random feature batch (several lengths) on the CPU in float32 (the
reference), on the GPU in float32 with TF32 convolutions/matmuls allowed (PyTorch's default for
cuDNN convolutions), in strict float32 (what the evaluation scripts use), and under bfloat16 autocast,
and through ONNX Runtime. Reported: the largest absolute embedding difference and the largest
difference of cosine scores between all pairs of the batch.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.embedding import strict_fp32  # noqa: E402
from common.files import write_text  # noqa: E402
from model.checkpoint import load_encoder  # noqa: E402

LENGTHS = (100, 200, 500)


def embed(model, features: torch.Tensor, device, amp: bool = False) -> np.ndarray:
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        return model.to(device)(features.to(device)).float().cpu().numpy()


def cosine_scores(embeddings: np.ndarray) -> np.ndarray:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return unit @ unit.T


def compare(reference: np.ndarray, other: np.ndarray) -> dict:
    return {"max_abs_embedding": float(np.abs(reference - other).max()),
            "max_rel_embedding": float(np.abs(reference - other).max() / np.abs(reference).max()),
            "max_abs_score": float(np.abs(cosine_scores(reference) - cosine_scores(other)).max())}


def modes(model, features, onnx_path):
    """(name, embeddings) for every mode this machine can run."""
    cpu = torch.device("cpu")
    yield "cpu_fp32", embed(model, features, cpu)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        with strict_fp32(gpu, tf32=True):
            yield "cuda_tf32", embed(model, features, gpu)
        with strict_fp32(gpu):
            yield "cuda_fp32_strict", embed(model, features, gpu)
        yield "cuda_bf16_autocast", embed(model, features, gpu, amp=True)
        model.to(cpu)
    if onnx_path:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        yield "onnxruntime_cpu", session.run(None, {session.get_inputs()[0].name: features.numpy()})[0]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--onnx", default=None, help="an exported encoder.onnx to compare too")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    model, _ = load_encoder(args.checkpoint, device="cpu")
    results = {}
    for frames in LENGTHS:
        generator = torch.Generator().manual_seed(frames)
        features = torch.randn(args.batch, 1, 40, frames, generator=generator) * 10
        features -= features.mean(dim=3, keepdim=True)
        outputs = dict(modes(model, features, args.onnx))
        reference = outputs.pop("cpu_fp32")
        results[str(frames)] = {name: compare(reference, other) for name, other in outputs.items()}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        write_text(args.json, text + "\n")
    return results


if __name__ == "__main__":
    main()
