"""torch_threads (ablate.train.device): the one way ablate sets torch's threads, restored however the block ends."""
import pytest
import torch

from ablate.spec.trial_config import TrialConfig
from ablate.train.device import torch_threads
from ablate.train.loop import run_trial


def test_threads_are_set_inside_and_restored_after_even_on_an_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with torch_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(other):
        raise RuntimeError("a trial failed")
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: leave them as they are
        assert torch.get_num_threads() == before


def test_a_trial_runs_on_its_threads_and_gives_the_process_its_own_back():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    cfg = TrialConfig(dataset="digits", family="cifar", depth=20, image_size=8, train_size=32, dev_size=16,
                      test_size=16, batch_size=16, epochs=1, eval_every=2, threads=other, telemetry=False)
    assert run_trial(cfg).threads == other
    assert torch.get_num_threads() == before
