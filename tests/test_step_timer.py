"""The one step timer (ablate.execute.step_timer): warm-up untimed, `ready` between warm-up and the clock, the
median of the timed steps (or one span); every speed measurement in ablate and the benchmarks goes through it."""
import re
import time
from pathlib import Path

import pytest

from ablate.execute.step_timer import time_steps

ROOT = Path(__file__).resolve().parent.parent


def test_warm_up_steps_are_not_timed_and_the_median_ignores_a_disturbed_step():
    durations = iter([0.2, 0.2, 0.001, 0.2, 0.001, 0.001, 0.001])  # two slow warm-ups, one disturbed step
    events = []

    def step():
        events.append("step")
        time.sleep(next(durations))

    times = time_steps(step, steps=5, warmup=2, ready=lambda: events.append("ready"))
    assert events == ["step", "step", "ready", *["step"] * 5]
    assert len(times.seconds) == times.steps == 5
    # the median is an undisturbed step: below the disturbed one (slept 0.2 s), whatever else holds the cores
    assert times.seconds[1] >= 0.2 and times.median < times.seconds[1]
    assert times.mean == pytest.approx((times.end - times.start) / 5)
    assert times.end - times.start >= sum(times.seconds) * 0.999


def test_one_span_times_the_steps_together():
    times = time_steps(lambda: time.sleep(0.002), steps=4, warmup=0, each=False)
    assert times.seconds == [] and times.median == times.mean and times.mean >= 0.002


def test_only_the_step_timer_synchronises_cuda_and_only_torch_threads_sets_threads():
    """One step timer, one way to set torch's threads: in ablate/ and benchmarks/ the calls appear only there."""
    files = [*ROOT.glob("ablate/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    setters = [str(f.relative_to(ROOT)) for f in files for _ in re.finditer(r"set_num_threads\(", f.read_text())]
    assert setters == ["ablate/train/device.py", "ablate/train/device.py"]  # set, and restore
    synchronising = [str(f.relative_to(ROOT)) for f in files if "cuda.synchronize" in f.read_text()]
    assert synchronising == ["ablate/execute/step_timer.py"]
