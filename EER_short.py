"""Short-utterance verification EER, the paper's protocol, as the original EER_short.py (batched).

    python EER_short.py --n_folder 0 --cp_num 100 --test_length 100 200 500

Per evaluation speaker (VoxCeleb1 dev+test for a vox2-trained model, VoxCeleb1 test for vox1):
--pairs_per_speaker target and non-target pairs; enrolment = full utterance, test = a random crop
of --test_length frames (100 = 1 s). Seeded: the same --seed gives the same trials and EER.
Writes scores_short_<len>_cpNNN.txt, eer_short_cpNNN.json and det_short_cpNNN.png.
"""
import argparse

from common.errors import run_main
import configure
from data_loading.corpus import FeatureCorpus
from evaluation import cli
from evaluation.plots import plot_det
from evaluation.short_utterance import evaluation_feature_roots, make_short_trials, score_short_trials

ORIGINAL_TEST_LENGTH = 500   # the original EER_short.py's default


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_model_arguments(parser, batch_size=64)
    parser.add_argument("--test_length", type=int, nargs="+", default=[ORIGINAL_TEST_LENGTH],
                        help="test crop length(s) in frames (100 = 1 s); several give one table and figure")
    parser.add_argument("--pairs_per_speaker", type=int, default=100,
                        help="target and (as many) non-target pairs per evaluation speaker")
    return configure.apply_common_arguments(parser.parse_args(argv))


def evaluate_length(args, model, corpus, test_length, enroll_cache, out_dir) -> tuple:
    print(f"--- test length {test_length} frames")
    trials = make_short_trials(corpus, test_length, args.pairs_per_speaker, args.seed)
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
    corpus = FeatureCorpus(evaluation_feature_roots(args.save_path, args.data_type), reindex=args.reindex)
    print(f"{corpus.n_speakers} evaluation speakers, {len(corpus)} utterances")
    model, checkpoint, out_dir = cli.load_model(args)
    enroll_cache, reports, curves = {}, {}, []
    for test_length in dict.fromkeys(args.test_length):
        reports[test_length], curve = evaluate_length(args, model, corpus, test_length, enroll_cache, out_dir)
        curves.append(curve)
    print_table(reports)
    cli.write_json(cli.result_path(args, out_dir, "eer_short", ".json"),
                   {"checkpoint": str(checkpoint), "data_type": args.data_type, "seed": args.seed,
                    "pairs_per_speaker": args.pairs_per_speaker,
                    "by_test_length": {str(k): v for k, v in reports.items()}})
    plot_det(curves, cli.result_path(args, out_dir, "det_short", ".png"), "DET, short test utterances")
    print(f"results written to {out_dir}")


if __name__ == "__main__":
    run_main(main)
