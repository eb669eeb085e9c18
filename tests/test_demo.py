"""demo.py: the quick run is the default, --full is today's longer run, explicit flags win, and the
summary shows the results and the time of every step."""
import demo


def test_quick_preset_is_the_default_and_full_is_the_longer_run():
    quick, full = demo.parse_args([]), demo.parse_args(["--full"])
    assert (quick.n_speakers, quick.max_epoch, quick.n_episode, quick.nb_class_train, quick.nb_episode) == \
        (24, 4, 25, 16, 50)
    assert (full.n_speakers, full.max_epoch, full.n_episode, full.nb_class_train, full.nb_episode) == \
        (40, 8, 40, 20, 100)
    # training episodes: the quick run trains on 100 episodes of 16 speakers, the full one on 320 of 20
    assert quick.max_epoch * quick.n_episode == 100 and full.max_epoch * full.n_episode == 320


def test_an_explicit_flag_overrides_the_preset():
    args = demo.parse_args(["--full", "--max_epoch", "2", "--nb_episode", "7"])
    assert (args.max_epoch, args.nb_episode, args.n_episode) == (2, 7, 40)


def test_step_times_table_lists_every_step_and_the_total():
    table = demo.step_times_table([("train.py", 61.25), ("EER_full.py (trained)", 4.0)], 70.04)
    assert table.splitlines() == ["| step | seconds |", "| --- | ---: |", "| train.py | 61.2 |",
                                  "| EER_full.py (trained) | 4.0 |", "| whole demo | 70.0 |"]


def test_results_table_reads_each_scripts_json():
    def results(eer, mindcf, short, accuracy):
        return {"eer_full": {"eer": eer, "mindcf_0.05": mindcf},
                "eer_short": {"by_test_length": {"100": {"eer": short[0]}, "200": {"eer": short[1]}}},
                "identification": {"n_way": 10, "accuracy": accuracy}}
    args = demo.parse_args([])
    table = demo.results_table(results(40.0, 0.99, (45.0, 41.5), 19.56),
                               results(25.5, 0.8512, (30.0, 27.25), 44.0), args)
    lines = table.splitlines()
    assert lines[2] == "| EER, full utterances (%) | 40.00 | 25.50 |"
    assert lines[3] == "| minDCF(0.05), full utterances | 0.99 | 0.85 |"
    assert lines[4] == "| EER, 1 s test crops (%) | 45.00 | 30.00 |"
    assert lines[5] == "| EER, 2 s test crops (%) | 41.50 | 27.25 |"
    assert lines[6] == "| identification, 10-way 1-shot (%) | 19.56 | 44.00 |"
    assert "4 epochs x 25 episodes (16-way" in table and "identification 10 %" in table
