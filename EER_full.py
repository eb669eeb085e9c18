"""Full-utterance verification EER on a trial list (default VoxCeleb1-O), as the paper's EER_full.py.

    python EER_full.py --n_folder 0 --cp_num 100 --data_type vox2 [--score_norm asnorm --cohort_size 300]
    python EER_full.py --n_folder 0 --cp_num 100 --protocol H      # VoxCeleb1-H (cleaned); O, E, O-original ...

Without --protocol or --trials it scores the paper's list lists/veri_test.txt (VoxCeleb1-O
original), as the paper's command always did; --protocol O|E|H picks the cleaned lists
(python dataprep.py --download_lists fetches them). Each utterance is embedded once, in batches;
embeddings go to a resumable cache (embedding_cache/ in the results folder or --cache_dir), so an
interrupted VoxCeleb1-E/H run continues where it stopped.

Prints EER, threshold and minDCF (p_target 0.01, 0.001, 0.05); writes scores_full_cpNNN.txt,
eer_full_cpNNN.json and det_full_cpNNN.png next to the checkpoint (or in --out_dir).
"""

import configure
from common.errors import run_main
from evaluation import cli
from evaluation.protocol import (add_cache_argument, add_protocol_arguments, embedding_cache,
                                 protocol_feature_roots, selected_trials)
from evaluation.full_utterance import asnorm_trial_scores, cosine_trial_scores, embed_trial_utterances
from evaluation.plots import plot_det
from evaluation.score_norm import speaker_cohort, training_cohort_corpus
from evaluation.trials import locate_features


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    cli.add_model_arguments(parser, batch_size=16)
    add_protocol_arguments(parser)
    add_cache_argument(parser)
    parser.add_argument("--score_norm", choices=("none", "asnorm"), default="none",
                        help="asnorm: also adaptive S-norm scores against a cohort of training speakers")
    parser.add_argument("--cohort_size", type=int, default=300, help="AS-norm top-K cohort scores")
    parser.add_argument("--cohort_utterances", type=int, default=3,
                        help="training utterances averaged per cohort speaker")
    return configure.apply_common_arguments(parser.parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    cli.check_checkpoint(args)
    trials = selected_trials(args)
    roots = protocol_feature_roots(args)
    located = locate_features(trials.utterances(), roots)
    cohort_features = training_cohort_corpus(args) if args.score_norm == "asnorm" else None
    model, checkpoint, out_dir = cli.load_model(args)
    cache = embedding_cache(args, checkpoint, roots, out_dir, len(located))
    names, embeddings = embed_trial_utterances(model, trials, located, args.device, args.batch_size, cache)
    scores = cosine_trial_scores(trials, names, embeddings)
    summary = {"checkpoint": str(checkpoint), "protocol": args.protocol, "trials": str(trials.path),
               **cli.evaluate_scores(trials.labels, scores)}
    curves = [("cosine", trials.labels, scores)]
    if cohort_features is not None:
        cohort = speaker_cohort(model, cohort_features, args.device, args.cohort_utterances, args.seed,
                                args.batch_size)
        normalised = asnorm_trial_scores(trials, names, embeddings, scores, cohort, args.cohort_size)
        summary["asnorm"] = {"cohort_size": args.cohort_size, "cohort_speakers": len(cohort),
                             **cli.evaluate_scores(trials.labels, normalised, prefix="AS-norm ")}
        cli.write_scores(cli.result_path(args, out_dir, "scores_full_asnorm", ".txt"), trials.labels,
                         normalised, trials.enroll, trials.test)
        curves.append((f"AS-norm (top {args.cohort_size})", trials.labels, normalised))
    cli.write_scores(cli.result_path(args, out_dir, "scores_full", ".txt"), trials.labels, scores,
                     trials.enroll, trials.test)
    cli.write_json(cli.result_path(args, out_dir, "eer_full", ".json"), summary)
    plot_det(curves, cli.result_path(args, out_dir, "det_full", ".png"), f"DET, {trials.path.name}")
    print(f"results written to {out_dir}")


if __name__ == "__main__":
    run_main(main)
