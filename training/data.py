"""Episodes for the training loop: a DataLoader over ``(epoch, index)`` keys, so persistent workers
always build episode ``index`` of the right epoch (episodes are pure functions of seed, epoch, index)."""
import torch

from data_loading.episodes import EpisodeDataset
from training.config import TrainConfig
from training.distributed import DistContext, ShardedEpisodeDataset


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` so that persistent DataLoader workers always know the epoch."""

    def __init__(self, n_episodes: int):
        self.n_episodes = n_episodes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_episodes

    def __iter__(self):
        return iter([(self.epoch, index) for index in range(self.n_episodes)])


class EpochEpisodes(torch.utils.data.Dataset):
    def __init__(self, episodes: EpisodeDataset):
        self.episodes = episodes

    def __getitem__(self, key) -> dict:
        epoch, index = key
        self.episodes.set_epoch(epoch)
        return self.episodes[index]


def build_loader(corpus, config: TrainConfig, n_episodes: int, ctx: DistContext, device: torch.device):
    """(DataLoader, its EpochSampler): this rank's share of every episode, ``config.workers`` workers."""
    if ctx.enabled:
        episodes = ShardedEpisodeDataset(corpus, config.episode, n_episodes, config.seed, ctx)
    else:
        episodes = EpisodeDataset(corpus, config.episode, n_episodes, config.seed)
    sampler = EpochSampler(n_episodes)
    extra = {"prefetch_factor": 4, "persistent_workers": True} if config.workers > 0 else {}
    loader = torch.utils.data.DataLoader(EpochEpisodes(episodes), batch_size=None, sampler=sampler,
                                         num_workers=config.workers, pin_memory=device.type == "cuda", **extra)
    return loader, sampler


def stop_workers(loader) -> None:
    """Stop a DataLoader's persistent workers now, while the interpreter is whole. Left to interpreter
    exit, persistent workers with pinned memory each wait out a 5 s join timeout (pytorch/pytorch#81794):
    train.py spent 62 s after its last epoch with 12 workers on an H200 (bench/gpu_exit_probe.sh)."""
    iterator = getattr(loader, "_iterator", None)  # the persistent workers' iterator (private in torch)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None
