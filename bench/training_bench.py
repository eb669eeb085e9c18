"""Training throughput (crops per second) of the full-width encoder (ResNet-34, channels 32).

Ours: episodes from a DataLoader with worker processes (pinned memory on GPU) overlapping the step;
on GPU also channels-last, cuDNN autotuning and, with ``amp``, bfloat16 autocast.
Baseline: the original loop, each episode assembled from whole float64 pickles in the loop's own
thread, float32, default memory format. Both run the same prototypical + GC step on the same plans
(support and query through the encoder in two forward passes, as the original).

On GPU the model FLOPs utilisation (MFU) assumes GMAC_PER_CROP per 200-frame crop forward (scaled by
frames), x3 for forward + backward, 2 FLOPs per MAC, against the card's dense peak (PEAK_TFLOPS).
"""
import time

import torch

from bench.baseline import episode_from_pickles, pickle_path
from bench.episodes_bench import loader_of
from bench.report import Result
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset
from model.loss import EpisodeObjective
from model.model import background_resnet

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
    model = background_resnet(num_classes=10, channels=channels).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, 40, frames))
    return counter.get_total_flops() / 2 / 1e9


class Trainer:
    def __init__(self, n_classes: int, device, amp: bool, channels_last: bool):
        torch.manual_seed(0)
        self.model = background_resnet(num_classes=n_classes, channels=32).to(device).train()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.objective = EpisodeObjective("prototypical", use_gc=True)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.device, self.amp = device, amp

    def to_device(self, tensor):
        return tensor.to(self.device, non_blocking=True)

    def step(self, episode: dict, n_way: int) -> None:
        support = self.to_device(episode["support"]).contiguous(memory_format=self.memory_format)
        query = self.to_device(episode["query"]).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            support_embeddings, query_embeddings = self.model(support), self.model(query)
        parts = self.objective(support_embeddings.float(), query_embeddings.float(),
                               self.to_device(episode["label_g"]), n_way, self.model.weight)
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer, episodes, n_way: int, warmup: int) -> float:
    """Seconds for the steps after ``warmup`` (episode production included)."""
    start = None
    for index, episode in enumerate(episodes):
        if index == warmup:
            synchronize(trainer.device)
            start = time.perf_counter()
        trainer.step(episode, n_way)
    synchronize(trainer.device)
    return time.perf_counter() - start


def crops_and_frames(dataset, n_episodes: int) -> tuple:
    plans = [dataset.plan(index) for index in range(n_episodes)]
    crops = sum(len(plan.utterances) for plan in plans)
    frames = sum(plan.n_support * plan.support_frames + (len(plan.utterances) - plan.n_support)
                 * plan.query_frames for plan in plans)
    return crops, frames


def run_loop(store, config, steps, warmup, workers, device, ours: bool, amp: bool = False):
    """(crops/s, achieved FLOP/s) of ``steps`` timed training steps."""
    corpus = FeatureCorpus(store.float32)
    dataset = EpisodeDataset(corpus, config, n_episodes=warmup + steps, seed=0)
    torch.backends.cudnn.benchmark = ours
    trainer = Trainer(corpus.n_speakers, device, amp=amp and ours, channels_last=ours and device.type == "cuda")
    if ours:
        episodes = loader_of(dataset, workers)
    else:
        pickle_paths = [pickle_path(store, utt.path) for utt in corpus.utterances]
        episodes = (episode_from_pickles(pickle_paths, dataset.plan(i)) for i in range(len(dataset)))
    seconds = timed_steps(trainer, episodes, config.n_way, warmup)
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
