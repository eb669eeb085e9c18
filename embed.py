"""Write a speaker embedding (.npy, 256 floats) for every recording in files, folders or a list.

    python embed.py --n_folder 0 --cp_num 100 --out embeddings my_recordings/
    python embed.py --checkpoint model.pth --out embeddings a.wav b.flac --list more_files.txt
    python embed.py --checkpoint model.pth --out embeddings --out_format ark --batch_size 32 my_recordings/

Many recordings share a forward (``--batch_size``, exact padding + masking); a recording longer
than ``--chunk_seconds`` is read in blocks of ``--block_seconds`` (twice: the features' mean, then
the features) straight into exact overlapping chunks (equal to the one-pass embedding), so neither
its waveform nor its features are held whole and memory does not grow with its length. A rerun skips
recordings whose ``.npy`` exists (resume) and adds to the index; ``model.json`` records the checkpoint,
and a rerun with another one is refused (``--overwrite`` embeds every input again).
``--out_format matrix`` adds ``embeddings.npy`` + ``keys.txt``, ``ark`` adds Kaldi
``embeddings.ark`` + ``embeddings.scp`` (keys: relative paths without suffix).

Folders are searched recursively for .wav .flac .ogg (and .m4a .mp3 ... when ffmpeg is installed).
Outputs mirror the inputs: ``my_recordings/spk1/a.wav`` -> ``embeddings/spk1/a.npy`` (relative to
the folder given); a file given directly (or listed) keeps its relative path, or just its name when
it is absolute or outside the current folder. ``embeddings/index.tsv`` lists embedding, source and
duration in seconds. Unreadable files are reported and skipped; the command then exits with code 2
and lists them.
"""

import configure
from common.errors import run_main
from evaluation import cli
from evaluation.batch_embedding import embed_to_folder
from evaluation.embedding_files import OUT_FORMATS
from feat_extract.audio_stream import BLOCK_SECONDS


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    parser.add_argument("inputs", nargs="*", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--list", dest="list_file", default=None, help="text file with one audio path per line")
    parser.add_argument("--out", required=True, help="output folder for .npy embeddings and index.tsv")
    parser.add_argument("--out_format", choices=OUT_FORMATS, default="npy",
                        help="also write one matrix + keys.txt (matrix) or Kaldi ark/scp (ark)")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out holds another model's embeddings: embed every input again with this one")
    parser.add_argument("--batch_size", type=int, default=16, help="recordings per forward pass")
    cli.add_chunk_seconds_argument(parser)
    parser.add_argument("--block_seconds", type=float, default=BLOCK_SECONDS,
                        help="audio is read (and features computed) this many seconds at a time")
    configure.add_checkpoint_arguments(parser)
    configure.add_common_arguments(parser)
    args = parser.parse_args(argv)
    configure.check_checkpoint_arguments(parser, args)
    if not args.inputs and not args.list_file:
        parser.error("give audio files/folders, or --list FILE")
    if args.batch_size < 1 or not args.chunk_seconds >= 1 or not args.block_seconds >= 0.1:
        parser.error("--batch_size must be >= 1, --chunk_seconds >= 1 and --block_seconds >= 0.1")
    return configure.apply_common_arguments(args)


def main(argv=None):
    return embed_to_folder(parse_args(argv))


if __name__ == "__main__":
    run_main(main)
