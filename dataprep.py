"""Prepare VoxCeleb (download, extract, convert) or write the built-in synthetic corpus.

    python dataprep.py --save_path DIR --download --user USER      # password: $VOXCELEB_PASSWORD or prompt
    python dataprep.py --save_path DIR --download --key KEY         # or $VOXCELEB_KEY
    python dataprep.py --save_path DIR --extract
    python dataprep.py --save_path DIR --convert --workers 8
    python dataprep.py --save_path DIR --convert --shard 3/8       # machine 3 of 8 converts its 1/8
    python dataprep.py --save_path DIR --synthetic [--n_speakers 40 --n_test_speakers 10 --seed 0]
    python dataprep.py --save_path DIR --download_augment --extract_augment [--split_musan]  # MUSAN, RIRS_NOISES
    python dataprep.py --save_path DIR --synthetic_augment        # a small synthetic noise/RIR set instead
    python dataprep.py --download_pretrained    # the authors' checkpoint -> saved_model/baseline_000/checkpoint_100.pth
    python dataprep.py --download_lists         # VoxCeleb1-O/E/H trial lists (original and cleaned) -> lists/

Then extract features with ``python feat_extract/feature_extraction.py --save_path DIR``.
For ``train.py --augment``: ``--noise_dir DIR/musan`` (or ``DIR/musan_split``) ``--rir_dir
DIR/RIRS_NOISES/simulated_rirs``; the synthetic set: ``DIR/augment/musan`` and
``DIR/augment/RIRS_NOISES/simulated_rirs``.
"""
import sys

import configure
from prep import augment_corpora, download, pretrained, synthetic, synthetic_augment, trial_lists
from common.errors import UserInputError, run_main
from feat_extract.shards import parse_shard


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    configure.add_save_path_argument(parser)
    parser.add_argument("--download", action="store_true", help="download the archive parts")
    parser.add_argument("--extract", action="store_true", help="join parts and extract the zips")
    parser.add_argument("--convert", action="store_true", help="VoxCeleb2 m4a -> 16 kHz wav (ffmpeg)")
    parser.add_argument("--user", default=None, help="VoxCeleb user name (password: "
                        "--password, $VOXCELEB_PASSWORD or a prompt)")
    parser.add_argument("--password", default=None,
                        help="prefer $VOXCELEB_PASSWORD or the prompt: flags show up in `ps`")
    parser.add_argument("--key", default=None, help="VoxCeleb access key (or $VOXCELEB_KEY)")
    parser.add_argument("--base_url", default=None, help="download host / mirror (default: with a key, "
                        f"{download.KEYED_BASE_URL}, asked as BASE?file=<part>&key=<key>; else "
                        f"{download.DEFAULT_BASE_URL}, asked as BASE/<part>)")
    parser.add_argument("--parts_list", default=str(configure.LISTS_DIR / "fileparts.txt"),
                        help="the VoxCeleb archive parts to download, 'name md5' per line")
    parser.add_argument("--archives_list", default=str(configure.LISTS_DIR / "files.txt"),
                        help="how parts join into archives, 'glob-of-parts archive md5' per line")
    parser.add_argument("--workers", type=int, default=None, help="parallel jobs (default: all cores)")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="--convert only shard K of N of the files (a deterministic split by file name, "
                             "as feature_extraction.py --shard), so several machines share the work")
    add_augment_arguments(parser)
    add_synthetic_arguments(parser)
    add_published_arguments(parser)
    return parser.parse_args(argv)


def add_published_arguments(parser) -> None:
    group = parser.add_argument_group("the authors' checkpoint and the VoxCeleb1 trial lists")
    group.add_argument("--download_pretrained", action="store_true",
                       help="fetch the authors' published checkpoint (Google Drive) into "
                            "MODEL_DIR/baseline_000/checkpoint_100.pth, where EER_full.py --n_folder 0 "
                            "--cp_num 100 finds it")
    group.add_argument("--pretrained_url", default=pretrained.PRETRAINED_URL,
                       help="Drive's download endpoint (or a mirror of it), asked as URL?export=download&id="
                            f"{pretrained.PRETRAINED_FILE_ID}")
    configure.add_model_dir_argument(group)
    group.add_argument("--download_lists", action="store_true",
                       help="fetch the VoxCeleb1-O/E/H trial lists, original and cleaned ("
                            f"{', '.join(configure.PROTOCOL_LISTS.values())}) into LISTS_DIR")
    group.add_argument("--lists_url", default=trial_lists.LISTS_URL, help="where the lists are published")
    group.add_argument("--lists_dir", default=str(configure.LISTS_DIR), help="where the lists go")


def add_augment_arguments(parser) -> None:
    group = parser.add_argument_group("augmentation corpora (MUSAN, RIRS_NOISES; for train.py --augment)")
    group.add_argument("--download_augment", action="store_true",
                       help="download musan.tar.gz (11 GB) and rirs_noises.zip (1.2 GB) from OpenSLR")
    group.add_argument("--extract_augment", action="store_true",
                       help="unpack them into SAVE_PATH/musan and SAVE_PATH/RIRS_NOISES")
    group.add_argument("--split_musan", action="store_true",
                       help="cut MUSAN into 5 s segments every 3 s in SAVE_PATH/musan_split (faster random access)")
    group.add_argument("--augment_list", default=str(configure.LISTS_DIR / "augment.txt"),
                       help="the archives' URLs and MD5 sums (copy and edit it for a mirror)")


def add_synthetic_arguments(parser) -> None:
    group = parser.add_argument_group("synthetic corpus")
    group.add_argument("--synthetic", action="store_true", help="write the built-in synthetic corpus")
    group.add_argument("--n_speakers", type=int, default=40, help="training speakers")
    group.add_argument("--n_test_speakers", type=int, default=10, help="unseen test speakers")
    group.add_argument("--utterances_per_speaker", type=int, default=20, help="utterances of a training speaker")
    group.add_argument("--test_utterances_per_speaker", type=int, default=10, help="utterances of a test speaker")
    group.add_argument("--min_seconds", type=float, default=3.0, help="shortest usual utterance, seconds")
    group.add_argument("--max_seconds", type=float, default=8.0, help="longest usual utterance, seconds")
    group.add_argument("--short_fraction", type=float, default=0.1, help="share of 1-2 s utterances")
    group.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same corpus)")
    group.add_argument("--synthetic_augment", action="store_true",
                       help="write a small synthetic noise/music/speech/RIR set in SAVE_PATH/augment")


def run_synthetic(args) -> None:
    result = synthetic.generate_corpus(
        args.save_path, args.n_speakers, args.n_test_speakers, args.utterances_per_speaker,
        args.test_utterances_per_speaker, args.seed, args.workers, args.min_seconds,
        args.max_seconds, args.short_fraction)
    print(f"synthetic corpus: {result['dev_utterances']} training utterances in {result['dev_root']}, "
          f"{result['test_utterances']} test utterances in {result['test_root']}, "
          f"trials in {result['trials']}")


def run_synthetic_augment(args) -> None:
    result = synthetic_augment.generate_augment_set(args.save_path, args.seed, args.workers)
    print(f"synthetic augmentation set: {result['files']} files; --noise_dir {result['noise_dir']} "
          f"--rir_dir {result['rir_dir']}")


def run_augment(args) -> None:
    entries = augment_corpora.read_augment_list(args.augment_list)
    if args.download_augment:
        counts = augment_corpora.download_augment(entries, args.save_path)
        print(f"download: {counts['downloaded']} archives downloaded, {counts['skipped']} already verified")
    if args.extract_augment:
        for archive, n_files in augment_corpora.extract_augment(entries, args.save_path).items():
            print(f"extract: {archive}: {n_files} files written")
    if args.split_musan:
        result = augment_corpora.split_musan(args.save_path, args.workers)
        print(f"split: {result['recordings']} MUSAN recordings, {result['segments_written']} segments "
              f"written to {result['split_root']}")


def run_voxceleb(args) -> None:
    parts = download.read_parts_list(args.parts_list)
    archives = download.read_archives_list(args.archives_list)
    if args.download:
        credentials = download.resolve_credentials(args.user, args.password, args.key)
        base_url = args.base_url or download.default_base_url(credentials)
        counts = download.download_all(base_url, parts, args.save_path, credentials)
        print(f"download: {counts['downloaded']} parts downloaded, {counts['skipped']} already verified")
    if args.extract:
        written = download.extract_all(args.save_path, args.save_path, parts, archives)
        for archive, n_files in written.items():
            print(f"extract: {archive}: {n_files} files written")
    if args.convert:
        result = download.convert_aac(args.save_path, args.workers, shard=args.shard)
        print(f"convert: {result['converted']} converted, {result['skipped']} already done, "
              f"{len(result['failed'])} failed")
        if result["failed"]:
            print(f"warning: {len(result['failed'])} files ffmpeg could not convert, e.g. "
                  f"{result['failed'][0][0]}: {result['failed'][0][1]}", file=sys.stderr)


def run_published(args) -> None:
    if args.download_pretrained:
        path, outcome = pretrained.download_pretrained(args.model_dir, args.pretrained_url)
        checked = "SHA-256 and structure verified" if pretrained.PRETRAINED_SHA256 else \
            "structure verified; no SHA-256 pinned yet"
        print(f"pretrained: {path} {outcome} ({checked}); evaluate it with "
              f"EER_full.py --n_folder {configure.PAPER_N_FOLDER} --cp_num {configure.PAPER_CP_NUM}"
              + (f" --model_dir {args.model_dir}" if args.model_dir else ""))
    if args.download_lists:
        outcomes = trial_lists.download_lists(args.lists_dir, args.lists_url)
        for name, outcome in outcomes.items():
            print(f"lists: {name} {outcome} in {args.lists_dir}")


def main(argv=None) -> None:
    args = parse_args(argv)
    args.save_path = args.save_path or configure.save_path
    augment = args.download_augment or args.extract_augment or args.split_musan
    published = args.download_pretrained or args.download_lists
    if not (args.synthetic or args.synthetic_augment or args.download or args.extract or args.convert
            or augment or published):
        raise UserInputError("nothing to do: give --synthetic and/or --synthetic_augment, or one or more "
                             "of --download, --extract, --convert, --download_augment, --extract_augment, "
                             "--split_musan, --download_pretrained, --download_lists")
    if args.workers is not None and args.workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {args.workers}")
    args.shard = parse_shard(args.shard)
    if args.synthetic:
        run_synthetic(args)
    if args.synthetic_augment:
        run_synthetic_augment(args)
    if augment:
        run_augment(args)
    if args.download or args.extract or args.convert:
        run_voxceleb(args)
    if published:
        run_published(args)


if __name__ == "__main__":
    run_main(main)
