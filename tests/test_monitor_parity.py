"""Every monitor of SpikingJelly's monitor module is in ``spikestore.monitor``; ``GPUMonitor`` works like theirs.

``GPUMonitor`` runs ``nvidia-smi``; here a small script of that name, first
on ``PATH``, prints readings that change at every call, so the tests run on
a machine without a GPU and know what each reading must be.
"""

from __future__ import annotations

import inspect
import logging
import os
import stat
import time
import types

import pytest
import spikingjelly.activation_based.monitor as sj_monitor
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import spikestore
import spikestore.monitor as ss_monitor
from spikestore.errors import InvalidArgumentError, MonitorWarning


def spikingjelly_classes() -> dict[str, type]:
    """The public classes SpikingJelly's monitor module defines: its monitors.

    A class counts when its ``__module__`` is the monitor module itself: the
    module also holds names it imports for its own use (``SummaryWriter``
    from torch's tensorboard support, ``TracebackType`` from the standard
    library), which are not part of its API and that spikestore does not
    re-export. Computed from the installed SpikingJelly, so a monitor that a
    later SpikingJelly adds fails the test below until spikestore has it.
    """
    return {name: obj for name, obj in vars(sj_monitor).items()
            if inspect.isclass(obj) and not name.startswith("_") and obj.__module__ == sj_monitor.__name__}


def test_the_monitor_classes_are_found():
    assert {"BaseMonitor", "OutputMonitor", "GPUMonitor"} <= set(spikingjelly_classes())
    assert "SummaryWriter" not in spikingjelly_classes()


def same_default(a: object, b: object) -> bool:
    """Whether two defaults are the same; functions (``lambda x: x``) by what they return for a tensor."""
    if isinstance(a, types.FunctionType):
        x = torch.arange(3.0)
        return callable(b) and torch.equal(a(x), b(x))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", sorted(spikingjelly_classes()))
def test_every_spikingjelly_monitor_has_a_compatible_constructor(name):
    """Every parameter of SpikingJelly's ``__init__`` is spikestore's too, with the same name, kind, place
    and default; spikestore's own extras are optional (``store=``, the selection keywords), so every call written
    for SpikingJelly binds the same way."""
    assert hasattr(ss_monitor, name), f"spikestore.monitor lacks SpikingJelly's {name}"
    theirs = list(inspect.signature(getattr(sj_monitor, name).__init__).parameters.values())[1:]
    ours = list(inspect.signature(getattr(ss_monitor, name).__init__).parameters.values())[1:]
    assert [p.name for p in ours[:len(theirs)]] == [p.name for p in theirs]
    for t, o in zip(theirs, ours, strict=False):
        assert o.kind == t.kind, (name, t.name)
        if t.default is inspect.Parameter.empty:
            assert o.default is inspect.Parameter.empty, (name, t.name)
        else:
            assert same_default(t.default, o.default), (name, t.name, t.default, o.default)
    for extra in ours[len(theirs):]:
        optional = extra.default is not inspect.Parameter.empty or extra.kind is inspect.Parameter.VAR_KEYWORD
        assert optional and extra.kind is not inspect.Parameter.VAR_POSITIONAL, (name, extra)


# -- GPUMonitor ---------------------------------------------------------------------------------

FAKE = """#!/bin/sh
# A stand-in for nvidia-smi: reading n (0, 1, ...) is GPU 0 at n % and 1000+n MiB, GPU 1 at 50+n % and 2000+n MiB.
d="$(dirname "$0")"
n=$(cat "$d/count")
echo $((n + 1)) > "$d/count"
echo "$@" > "$d/args"
echo "0, $n, $((1000 + n))"
echo "1, $((50 + n)), $((2000 + n))"
"""


def install(folder, script: str, monkeypatch) -> None:
    folder.mkdir(exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(script)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    (folder / "count").write_text("0\n")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    install(tmp_path / "bin", FAKE, monkeypatch)
    return tmp_path / "bin"


def wait_for_readings(monitor, n: int) -> int:
    """Wait until ``monitor`` has taken ``n`` readings, stop it and return how many it took in all."""
    deadline = time.monotonic() + 60
    while monitor.step < n:
        assert monitor.is_alive() and time.monotonic() < deadline, monitor.error
        time.sleep(0.002)
    monitor.stop()
    monitor.join()
    return int(monitor.step)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_readings_reach_tensorboard_and_the_store(fake_smi, tmp_path):
    path = tmp_path / "run.zarr"
    with spikestore.Store(path) as store:
        store.set_step(7)
        monitor = ss_monitor.GPUMonitor(str(tmp_path / "tb"), gpu_ids=(0, 1), interval=0.001, store=store)
        n = wait_for_readings(monitor, 3)
        assert monitor.error is None
    assert (fake_smi / "args").read_text().split() == monitor.command[1:] == [
        "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0,1"]
    got = scalars(tmp_path / "tb" / "gpu_monitor")
    assert got == {"utilization_0": [(j, j) for j in range(n)], "memory_used_0": [(j, 1000 + j) for j in range(n)],
                   "utilization_1": [(j, 50 + j) for j in range(n)], "memory_used_1": [(j, 2000 + j) for j in range(n)]}
    run = spikestore.open(path)
    assert sorted(run.streams) == ["gpu_memory_used/0", "gpu_memory_used/1", "gpu_utilization/0", "gpu_utilization/1"]
    for key, base in [("gpu_utilization/0", 0), ("gpu_memory_used/0", 1000), ("gpu_utilization/1", 50),
                      ("gpu_memory_used/1", 2000)]:
        s = run[key]
        assert s[:].tolist() == [base + j for j in range(n)] and s[0].dtype == "int64"
        assert s.steps.tolist() == [7] * n and s.calls.tolist() == list(range(n))  # keyed by the store's step
        assert [seg.encoding for seg in s.segments] == ["raw"]  # (0% and 1% too: readings, not spikes)
        assert s.attrs["monitor"] == "GPUMonitor" and s.attrs["unit"] == ("%" if "util" in key else "MiB")


def test_tensorboard_files_match_spikingjelly_s(fake_smi, tmp_path):
    for module, folder in [(sj_monitor, "sj"), (ss_monitor, "ss")]:
        (fake_smi / "count").write_text("0\n")
        monitor = module.GPUMonitor(str(tmp_path / folder), gpu_ids=(0, 1), interval=600.0)
        assert wait_for_readings(monitor, 1) == 1  # (the first reading at once, the next in 10 minutes)
    assert scalars(tmp_path / "ss" / "gpu_monitor") == scalars(tmp_path / "sj" / "gpu_monitor") != {}


def test_without_nvidia_smi_it_warns_at_once_and_records_nothing(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with spikestore.Store(tmp_path / "run.zarr") as store:
        with pytest.warns(MonitorWarning, match="nvidia-smi was not found on PATH.*NVIDIA driver"):
            monitor = ss_monitor.GPUMonitor(str(tmp_path / "tb"), store=store)
        monitor.join()  # (it stops by itself)
        assert "nvidia-smi was not found" in monitor.error and monitor.step == 0
    assert spikestore.open(tmp_path / "run.zarr").streams == []
    assert not (tmp_path / "tb").exists()


def test_a_failing_nvidia_smi_stops_the_monitor_with_its_message(tmp_path, monkeypatch):
    message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    install(tmp_path / "bin", f'#!/bin/sh\necho "{message}"\nexit 9\n', monkeypatch)
    with spikestore.Store(tmp_path / "run.zarr") as store:
        with pytest.warns(MonitorWarning, match="exited with code 9: NVIDIA-SMI has failed"):
            monitor = ss_monitor.GPUMonitor(str(tmp_path / "tb"), store=store)  # (the first reading: at once)
        monitor.join()  # (it stops by itself)
    assert message in monitor.error and monitor.step == 0
    assert spikestore.open(tmp_path / "run.zarr").streams == [] and not (tmp_path / "tb").exists()


def test_unreadable_output_stops_the_monitor(tmp_path, monkeypatch):
    install(tmp_path / "bin", '#!/bin/sh\necho "0, [N/A], 100"\n', monkeypatch)
    with pytest.warns(MonitorWarning, match=r"not 'index, utilization %, memory MiB': '0, \[N/A\], 100'"):
        monitor = ss_monitor.GPUMonitor(None)
        monitor.join()
    assert monitor.step == 0


def test_without_log_dir_readings_are_logged(fake_smi, caplog):
    with caplog.at_level(logging.INFO, logger="spikestore"):
        monitor = ss_monitor.GPUMonitor(None, gpu_ids=(0, 1), interval=600.0)
        wait_for_readings(monitor, 1)
    assert "GPU monitor sample at" in caplog.text and "0, 0, 1000\n1, 50, 2000" in caplog.text


def test_arguments_start_and_context_manager(fake_smi, tmp_path):
    for bad in [{"gpu_ids": ()}, {"interval": 0}, {"interval": -1.0}]:
        with pytest.raises(InvalidArgumentError) as info:
            ss_monitor.GPUMonitor(None, **bad)
        assert isinstance(info.value, ValueError)  # (SpikingJelly raises ValueError)
    with spikestore.Store(tmp_path / "run.zarr") as store:
        with ss_monitor.GPUMonitor(None, start_now=False, store=store) as monitor:
            assert not monitor.is_alive() and monitor.step == 0
            with pytest.raises(InvalidArgumentError, match="GPUMonitor"):  # one monitor a stream
                ss_monitor.GPUMonitor(None, gpu_ids=(0,), start_now=False, store=store)
            monitor.start()
            while monitor.step < 1:
                assert monitor.is_alive()
                time.sleep(0.002)
        assert not monitor.is_alive()  # (leaving the block stopped and joined it)
        with ss_monitor.GPUMonitor(None, interval=600.0, store=store) as again:  # its streams were released
            wait_for_readings(again, 1)
    assert spikestore.open(tmp_path / "run.zarr")["gpu_utilization/0"][:].tolist() == [0, 1]


def test_a_closed_store_stops_the_appends_not_the_monitor(fake_smi, tmp_path):
    store = spikestore.Store(tmp_path / "run.zarr")
    monitor = ss_monitor.GPUMonitor(str(tmp_path / "tb"), gpu_ids=(0, 1), interval=600.0, start_now=False,
                                    store=store)
    store.close()
    with pytest.warns(MonitorWarning, match=r"stopped appending GPU readings to .*run.zarr: .*closed.*stop\(\)"):
        monitor.start()
    assert wait_for_readings(monitor, 1) == 1 and monitor.error is None and monitor.store is None
    assert scalars(tmp_path / "tb" / "gpu_monitor")["utilization_1"] == [(0, 50)]  # TensorBoard goes on
    assert spikestore.open(tmp_path / "run.zarr").streams == []
