"""Training throughput (crops per second) of the full-width encoder (ResNet-34, channels 32).

Both run the project's real step (``training.step.build_encoder`` / ``build_step`` / ``build_optimizer`` /
``train_step``: prototypical + GC, support and query in two forward passes, SGD) on the same plans.
Ours: episodes from ``training.data.build_loader`` (DataLoader workers, pinned memory on GPU) overlapping
the step; on GPU, with ``amp``, bfloat16 autocast (channels-last comes with
build_encoder on GPU, for both). Baseline: the original loop, each episode assembled from whole
float64 pickles in the loop's own thread, fp32.

On GPU the model FLOPs utilisation (MFU) assumes GMAC_PER_CROP per 200-frame crop forward (scaled by
frames), x3 for forward + backward, 2 FLOPs per MAC, against the card's dense peak (PEAK_TFLOPS).
"""
import time

import torch

import train
from training.config import TrainConfig, resolve_config
from training.data import build_loader
from training.step import build_encoder, build_optimizer, build_step, train_step
from bench.baseline import episode_from_pickles, pickle_path
from bench.report import Result
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset
from training.distributed import DistContext
from model.registry import build_model

GMAC_PER_CROP = 2.4
PEAK_TFLOPS = {  # dense (bfloat16, tf32) peaks by device-name fragment
    "H200": (989.0, 494.0), "H100 PCIe": (756.0, 378.0), "H100": (989.0, 494.0),
    "A100": (312.0, 156.0), "L40S": (362.0, 183.0), "A10": (125.0, 62.5), "L4": (121.0, 60.0),
}


def peak_tflops(device, amp: bool):
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            return peaks[0] if amp else peaks[1]
    return None


def measured_gmac_per_crop(channels: int = 32, frames: int = 200) -> float:
    """MACs of one eval-mode forward of a (1, 1, 40, frames) crop, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode
    model = build_model("background_resnet", num_classes=10, channels=channels).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, 40, frames))
    return counter.get_total_flops() / 2 / 1e9


def train_config(episode: EpisodeConfig, workers: int, amp: bool, channels: int = 32) -> TrainConfig:
    """train.py's settings for prototypical + GC at full width (its defaults) and this episode shape."""
    flags = ["--loss_type", "prototypical", "--use_GC", "True", "--nb_class_train", str(episode.n_way),
             "--n_shot", str(episode.n_shot), "--n_query", str(episode.n_query),
             "--use_variable", str(episode.variable_query), "--seed", "0", "--backbone", "resnet34",
             "--channels", str(channels), "--workers", str(workers), "--amp", str(amp)]
    return resolve_config(train.build_parser().parse_args(flags))


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step, optimizer, episodes, device, amp: bool, warmup: int) -> float:
    """Seconds for the training steps after ``warmup`` (episode production included)."""
    start = None
    step.train()
    for index, batch in enumerate(episodes):
        if index == warmup:
            synchronize(device)
            start = time.perf_counter()
        train_step(step, optimizer, batch, device, amp)
    synchronize(device)
    return time.perf_counter() - start


def crops_and_frames(dataset, n_episodes: int) -> tuple:
    plans = [dataset.plan(index) for index in range(n_episodes)]
    crops = sum(len(plan.utterances) for plan in plans)
    frames = sum(plan.n_support * plan.support_frames + (len(plan.utterances) - plan.n_support)
                 * plan.query_frames for plan in plans)
    return crops, frames


def episode_source(store, corpus, config: TrainConfig, n_episodes: int, device, ours: bool):
    """Ours: training.data.build_loader (DataLoader workers). Baseline: the same plans assembled from
    whole float64 pickles in the training loop's own thread."""
    if ours:
        loader, _ = build_loader(corpus, config, n_episodes, DistContext(), device)
        return loader
    dataset = EpisodeDataset(corpus, config.episode, n_episodes, config.seed)
    pickle_paths = [pickle_path(store, utt.path) for utt in corpus.utterances]
    return (episode_from_pickles(pickle_paths, dataset.plan(i)) for i in range(n_episodes))


def run_loop(store, episode, steps, warmup, workers, device, ours: bool, amp: bool = False, channels: int = 32):
    """(crops/s, achieved FLOP/s) of ``steps`` timed training.step.train_step calls after ``warmup``."""
    corpus = FeatureCorpus(store.float32)
    config = train_config(episode, workers, amp and ours, channels)
    # no cuDNN autotuning: with variable queries each new query length would be tuned inside these few
    # timed steps; bench/gpu_check.sh measures autotuning over whole epochs of train.py instead
    torch.backends.cudnn.benchmark = False
    encoder = build_encoder(config, corpus.n_speakers, device, DistContext())
    step = build_step(encoder, config, DistContext(), device)
    optimizer = build_optimizer(encoder, lr=0.01)
    episodes = episode_source(store, corpus, config, warmup + steps, device, ours)
    seconds = timed_steps(step, optimizer, episodes, device, config.amp, warmup)
    dataset = EpisodeDataset(corpus, episode, n_episodes=warmup + steps, seed=0)
    crops, frames = crops_and_frames(dataset, warmup + steps)
    timed_fraction = steps / (warmup + steps)  # steps differ only in query length: close enough
    flops = GMAC_PER_CROP * 1e9 * (frames / 200) * timed_fraction * 3 * 2
    return crops * timed_fraction / seconds, flops / seconds


def training_results(store, config: EpisodeConfig, steps: int, warmup: int, workers: int, device) -> list:
    baseline, _ = run_loop(store, config, steps, warmup, workers, device, ours=False)
    shape = f"{config.n_way}-way {config.n_shot}-shot {config.n_query}-query, {steps} steps"
    if device.type != "cuda":
        ours, _ = run_loop(store, config, steps, warmup, workers, device, ours=True)
        return [Result("train_samples_per_s_cpu", ours, "crops/s", baseline, True, None,
                       f"ResNet-34 channels 32, {shape}, {workers} workers")]
    results = []
    for amp in (False, True):
        ours, flops_per_s = run_loop(store, config, steps, warmup, workers, device, ours=True, amp=amp)
        peak = peak_tflops(device, amp)
        mfu = f"MFU {100 * flops_per_s / (peak * 1e12):.1f}% of {peak:g} TFLOPS" if peak else "peak unknown"
        results.append(Result(f"train_samples_per_s_cuda{'_amp' if amp else ''}", ours, "crops/s",
                              baseline, True, 3.0, f"{shape}, {workers} workers; {mfu}"))
    return results
