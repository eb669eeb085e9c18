"""Unseen-speaker identification accuracy in N-way K-shot episodes, as the paper's identification.py.

    python identification.py --n_folder 0 --cp_num 100 --n_shot 1 --n_query 5 --nb_class_test 50 \\
        --nb_episode 1000 --enroll_length 500 --test_length 100

Speakers: VoxCeleb1 dev+test for a vox2-trained model, VoxCeleb1 test for a vox1-trained one.
Prints the mean accuracy with its 95 % confidence interval (1.96 * std / sqrt(episodes)).
"""

from common.errors import run_main
import configure
from data_loading.corpus import FeatureCorpus
from evaluation import cli
from evaluation.episodes_eval import IdentificationConfig, mean_confidence, run_identification
from evaluation.short_utterance import evaluation_feature_roots


def parse_args(argv=None):
    parser = configure.argument_parser(__doc__)
    cli.add_model_arguments(parser, batch_size=128)
    parser.add_argument("--n_shot", type=int, default=1, help="enrolment utterances per speaker")
    parser.add_argument("--n_query", type=int, default=5, help="test utterances per speaker")
    parser.add_argument("--nb_class_test", type=int, default=50, help="speakers per episode (N-way)")
    parser.add_argument("--nb_episode", type=int, default=1000, help="number of episodes")
    parser.add_argument("--enroll_length", type=int, default=500, help="enrolment crop frames (500 = 5 s)")
    parser.add_argument("--test_length", type=int, default=100, help="test crop frames (100 = 1 s)")
    return configure.apply_common_arguments(parser.parse_args(argv))


def main(argv=None):
    args = parse_args(argv)
    cli.check_checkpoint(args)
    cli.check_positive(args, "n_shot", "n_query", "nb_class_test", "nb_episode", "enroll_length", "test_length")
    corpus = FeatureCorpus(evaluation_feature_roots(args.save_path, args.data_type), reindex=args.reindex)
    config = IdentificationConfig(args.nb_class_test, args.n_shot, args.n_query, args.enroll_length,
                                  args.test_length)
    model, checkpoint, out_dir = cli.load_model(args)
    accuracies = run_identification(model, corpus, config, args.nb_episode, args.device, args.seed,
                                    args.batch_size)
    accuracy, ci95 = mean_confidence(accuracies)
    print(f"Accuracy_test {args.n_shot}-shot {args.nb_class_test}-way: {accuracy:.2f} % "
          f"+- {ci95:.2f} (95 % CI, {len(accuracies)} episodes)")
    cli.write_json(cli.result_path(args, out_dir, "identification", ".json"),
                   {"checkpoint": str(checkpoint), "accuracy": accuracy, "ci95": ci95,
                    "n_episodes": len(accuracies), **vars(config)})


if __name__ == "__main__":
    run_main(main)
