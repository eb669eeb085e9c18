"""Short-utterance verification EER, the paper's protocol, as the original EER_short.py (batched).

    python EER_short.py --n_folder 0 --cp_num 100 --test_length 100 200 500

Per evaluation speaker (VoxCeleb1 dev+test for a vox2-trained model, VoxCeleb1 test for vox1):
--pairs_per_speaker target and non-target pairs; enrolment = full utterance, test = a random crop
of --test_length frames (100 = 1 s). Seeded: the same --seed gives the same trials and EER.
Writes scores_short_<len>_cpNNN.txt, eer_short_cpNNN.json and det_short_cpNNN.png.

    python EER_short.py --n_folder 0 --cp_num 100 --test_length 100 200 --protocol H

With --protocol O|E|H (cleaned VoxCeleb1 lists; O-original etc. as first published) or --trials,
the list's pairs replace the drawn ones: enrolment = the full utterance (through the resumable
embedding cache EER_full.py uses), test = a seeded random crop of --test_length frames.
"""

import numpy as np

from common.errors import run_main
import configure
from data_loading.corpus import FeatureCorpus
from evaluation import cli
from evaluation.plots import plot_det
from evaluation.protocol import (add_cache_argument, add_protocol_arguments, embedding_cache,
                                 protocol_feature_roots, selected_trials)
from evaluation.short_utterance import (cached_enrolments, evaluation_feature_roots, listed_pairs, make_short_trials,
                                        score_short_trials)

ORIGINAL_TEST_LENGTH = 500   # the original EER_short.py's default


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    cli.add_model_arguments(parser, batch_size=64)
    parser.add_argument("--test_length", type=int, nargs="+", default=[ORIGINAL_TEST_LENGTH],
                        help="test crop length(s) in frames (100 = 1 s); several give one table and figure")
    parser.add_argument("--pairs_per_speaker", type=int, default=100,
                        help="target and (as many) non-target pairs per evaluation speaker (without a list)")
    add_protocol_arguments(parser, default="pairs drawn per speaker, as the paper (--pairs_per_speaker)")
    add_cache_argument(parser)
    return configure.apply_common_arguments(parser.parse_args(argv))


def evaluate_length(args, model, corpus, test_length, enroll_cache, out_dir, pairs=None) -> tuple:
    print(f"--- test length {test_length} frames")
    trials = make_short_trials(corpus, test_length, args.pairs_per_speaker, args.seed, pairs)
    scores = score_short_trials(model, corpus, trials, args.device, args.batch_size, enroll_cache)
    report = cli.evaluate_scores(trials.label, scores)
    names = [key + ".wav" for key in corpus.keys()]
    cli.write_scores(cli.result_path(args, out_dir, f"scores_short_{test_length}", ".txt"), trials.label,
                     scores, [names[i] for i in trials.enroll], [names[i] for i in trials.test])
    return report, (f"{test_length / 100:g} s ({test_length} frames)", trials.label, scores)


def print_table(reports: dict) -> None:
    print("\n| test length (frames) | EER (%) | minDCF 0.01 | trials |\n| --- | --- | --- | --- |")
    for length, report in reports.items():
        print(f"| {length} | {report['eer']:.4f} | {report['mindcf_0.01']:.4f} | {report['n_trials']} |")


def main(argv=None):
    args = parse_args(argv)
    cli.check_checkpoint(args)
    listed = selected_trials(args) if args.protocol or args.trials else None
    roots = (protocol_feature_roots(args) if listed
             else evaluation_feature_roots(args.save_path, args.data_type))
    corpus = FeatureCorpus(roots, reindex=args.reindex)
    pairs = listed_pairs(corpus, listed) if listed else None
    print(f"{corpus.n_speakers} evaluation speakers, {len(corpus)} utterances"
          + (f"; {len(listed)} trials of {listed.path}" if listed else ""))
    model, checkpoint, out_dir = cli.load_model(args)
    enroll_cache, reports, curves = {}, {}, []
    if listed:
        folder = embedding_cache(args, checkpoint, roots, out_dir, len(np.unique(pairs[0])))
        enroll_cache = cached_enrolments(model, corpus, pairs[0], args.device, max(1, args.batch_size // 4), folder)
    for test_length in dict.fromkeys(args.test_length):
        reports[test_length], curve = evaluate_length(args, model, corpus, test_length, enroll_cache, out_dir, pairs)
        curves.append(curve)
    print_table(reports)
    cli.write_json(cli.result_path(args, out_dir, "eer_short", ".json"),
                   {"checkpoint": str(checkpoint), "data_type": args.data_type, "seed": args.seed,
                    "protocol": args.protocol, "trials": str(listed.path) if listed else None,
                    "pairs_per_speaker": args.pairs_per_speaker,
                    "by_test_length": {str(k): v for k, v in reports.items()}})
    plot_det(curves, cli.result_path(args, out_dir, "det_short", ".png"), "DET, short test utterances")
    print(f"results written to {out_dir}")


if __name__ == "__main__":
    run_main(main)
