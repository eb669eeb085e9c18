"""Export a trained encoder for deployment: TorchScript (encoder.pt) and ONNX (encoder.onnx).

    python export.py --n_folder 0 --cp_num 100 --out exported
    python export.py --checkpoint model.pth --out exported --format onnx

Both take log-mel features shaped (batch, 1, 40, frames) -- any batch size and any number of frames
-- and return (batch, 256) embeddings. ``encoder.json`` records the shapes and the feature recipe
(16 kHz mono, 40 log-mel filters, 25 ms windows every 10 ms, per-utterance mean removed), which a
deployment must reproduce (``feat_extract.fbank.log_mel_fbank`` is the reference). A folder that
already holds an export is refused (``--overwrite`` replaces it).
"""

import configure
from common.errors import run_main
from evaluation.export import FORMATS, export_checkpoint


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    configure.add_checkpoint_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (not a file name)")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out holds an earlier export: replace it (each file atomically)")
    parser.add_argument("--format", nargs="+", default=list(FORMATS), choices=FORMATS,
                        help="what to write: TorchScript, ONNX or both")
    args = parser.parse_args(argv)
    configure.check_checkpoint_arguments(parser, args)
    return args


def main(argv=None):
    return export_checkpoint(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
