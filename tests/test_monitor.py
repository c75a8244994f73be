"""Parity with SpikingJelly 2.0.0's own monitors, in memory and through a store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import deep_net, run_steps
from parity import MONITORS, firing_rate, make_monitor, same_record, tutorial_net
from spikingjelly.activation_based import monitor as sj
from spikingjelly.activation_based import neuron

import spikestore
from spikestore import InvalidValueError
from spikestore import monitor as ss


@pytest.mark.parametrize("node", [neuron.IFNode, neuron.LIFNode], ids=["IF", "LIF"])
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("cls,args,kwargs", MONITORS, ids=[f"{m[0]}{i}" for i, m in enumerate(MONITORS)])
def test_parity_with_spikingjelly(store_path, node, step_mode, cls, args, kwargs):
    net = tutorial_net(node, step_mode)
    ref = make_monitor(sj, cls, args, kwargs, net, node)
    mem = make_monitor(ss, cls, args, kwargs, net, node)
    store = spikestore.Store(store_path)
    disk = make_monitor(ss, cls, args, kwargs, net, node, store=store)
    run_steps(net, step_mode, 3, store)

    n = len(ref.records)
    assert n == (3 if step_mode == "m" else 12) * 2
    assert mem.monitored_layers == disk.monitored_layers == ref.monitored_layers == ["1", "3"]
    assert len(mem.records) == len(disk.records) == n
    for i in range(n):
        assert same_record(ref.records[i], mem.records[i]), i
        assert same_record(ref.records[i], disk.records[i]), i
    assert mem.name_records_index == disk.name_records_index == ref.name_records_index
    for name in ("1", "3"):
        assert all(same_record(a, b) for a, b in zip(ref[name], list(disk[name]), strict=True))
    # In-memory records are detached from the graph; SpikingJelly's are not.
    assert all(not isinstance(r, torch.Tensor) or r.grad_fn is None for r in mem.records)

    # After reopening the store, the same values come back from disk.
    store.close()
    run = spikestore.open(store_path)
    quantity = disk.quantity
    for name in ("1", "3"):
        s = run[f"{quantity}/{name}"]
        records = [r for r in ref[name] if r is not None]
        assert len(s) == len(records)
        for i, r in enumerate(records):
            want = r.detach().numpy() if isinstance(r, torch.Tensor) else np.asarray(r)
            np.testing.assert_array_equal(s[i], want)
        calls = s.calls
        if step_mode == "s" and cls in ("OutputMonitor", "InputMonitor"):
            assert calls.tolist() == [0, 1, 2, 3] * 3  # T calls a step, in order
        assert s.steps.tolist() == sorted(s.steps.tolist())


def test_v_seq_attribute_is_stored_as_raw_floats(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    for m in net.modules():
        if isinstance(m, neuron.IFNode):
            m.store_v_seq = True
    ref = sj.AttributeMonitor("v_seq", False, net, neuron.IFNode)
    with spikestore.Store(tmp_path / "v.zarr") as store:
        mon = ss.AttributeMonitor("v_seq", False, net, neuron.IFNode, store=store)
        run_steps(net, "m", 2, store)
        assert all(same_record(a, b) for a, b in zip(ref.records, list(mon.records), strict=True))
    s = spikestore.open(tmp_path / "v.zarr")["v_seq/1"]
    assert s.segments[0].encoding == "raw" and s[0].shape == (4, 2, 4)


def test_surrogate_alpha_sweep_of_gradient_norms(tmp_path):
    """The tutorial's section 6 experiment, through a store."""
    store = spikestore.Store(tmp_path / "g.zarr")
    results = {}
    for step, alpha in enumerate([0.5, 2.0, 8.0]):
        net = deep_net(alpha)
        ref = sj.GradInputMonitor(net, neuron.IFNode, function_on_grad_input=torch.norm)
        mon = ss.GradInputMonitor(net, neuron.IFNode, function_on_grad_input=torch.norm, store=store)
        store.set_step(step)
        net(torch.rand(4, 1, 8, generator=torch.Generator().manual_seed(0))).sum().backward()
        assert all(same_record(a, b) for a, b in zip(ref.records, list(mon.records), strict=True))
        results[alpha] = [float(r) for r in mon.records]
        mon.remove_hooks()
        ref.remove_hooks()
    store.close()
    run = spikestore.open(tmp_path / "g.zarr")
    assert run["grad_input/1"].steps.tolist() == [0, 1, 2]
    assert [float(run["grad_input/1"][i]) for i in range(3)] == [results[a][-1] for a in results]


def test_clearing_the_view_keeps_data_on_disk(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "c.zarr") as store:
        mon = ss.OutputMonitor(net, neuron.IFNode, store=store)
        run_steps(net, "m", 2, store)
        assert len(mon.records) == 4
        mon.clear_recorded_data()
        assert len(mon.records) == 0 and list(mon["1"]) == []
        run_steps(net, "m", 1, store)
        assert len(mon.records) == 2
        mon.records.clear()
        assert len(mon.records) == 0
    assert len(spikestore.open(tmp_path / "c.zarr")["output/1"]) == 3


def test_enable_disable_remove_hooks_and_context_manager(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "e.zarr") as store:
        with ss.OutputMonitor(net, neuron.IFNode, store=store) as mon:
            mon.disable()
            assert not mon.is_enable()
            run_steps(net, "m", 1, store)
            assert len(mon.records) == 0
            mon.enable()
            run_steps(net, "m", 1, store)
            assert len(mon.records) == 2
        assert mon.hooks == []
        run_steps(net, "m", 1, store)
        assert len(mon.records) == 2  # closed: hooks gone, records kept


def test_hooks_are_removed_by_the_finaliser(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    mon = ss.OutputMonitor(net, neuron.IFNode)
    ref = sj.OutputMonitor(net, neuron.IFNode)
    assert len(net[1]._forward_hooks) == 2
    mon.__del__()
    ref.__del__()
    assert len(net[1]._forward_hooks) == 0


def test_an_unreferenced_store_monitor_keeps_recording(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "k.zarr") as store:
        ss.OutputMonitor(net, neuron.IFNode, store=store)  # no reference kept, as people write it
        import gc

        gc.collect()
        run_steps(net, "m", 2, store)
    assert len(spikestore.open(tmp_path / "k.zarr")["output/1"]) == 2


def test_store_path_is_owned_and_closed_by_the_monitor(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    mon = ss.OutputMonitor(net, neuron.IFNode, store=tmp_path / "own.zarr")
    run_steps(net, "m", 2, mon.store)
    mon.close()
    assert mon.store.closed
    assert len(spikestore.open(tmp_path / "own.zarr")["output/3"]) == 2
    assert len(mon.records) == 4  # still readable after close


def test_selection_every_start_stop_batch_neurons(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    ref = sj.OutputMonitor(net, neuron.IFNode)
    with spikestore.Store(tmp_path / "s.zarr") as store:
        mon = ss.OutputMonitor(net, neuron.IFNode, store=store, every=2, start=1, stop=6,
                               batch=[1], neurons=slice(0, 3))
        run_steps(net, "m", 8, store)
        kept = [step for step in range(8) if 1 <= step < 6 and (step - 1) % 2 == 0]
        assert kept == [1, 3, 5]
        want = [ref["1"][s][:, [1]].flatten(2)[..., 0:3] for s in kept]
        got = list(mon["1"])
        assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    s = spikestore.open(tmp_path / "s.zarr")["output/1"]
    assert s.steps.tolist() == [1, 3, 5]
    assert s.selection == {"every": 2, "start": 1, "stop": 6, "batch": [1],
                           "neurons": {"slice": [0, 3, None]}, "step_mode": "m", "batch_axis": 1}


def test_selection_in_single_step_mode_uses_axis_0(tmp_path):
    net = tutorial_net(neuron.IFNode, "s")
    with spikestore.Store(tmp_path / "s.zarr") as store:
        mon = ss.OutputMonitor(net, neuron.IFNode, store=store, batch=slice(0, 1), neurons=[1, 0])
        ref = sj.OutputMonitor(net, neuron.IFNode)
        run_steps(net, "s", 1, store)
        assert len(ref["1"]) == 4
        for a, b in zip(ref["1"], list(mon["1"]), strict=True):
            assert torch.equal(a[0:1][:, [1, 0]], b)


def test_a_selection_that_does_not_fit_names_the_layer(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "s.zarr") as store:
        ss.OutputMonitor(net, neuron.IFNode, store=store, neurons=[3])  # layer '3' has 2 neurons
        with pytest.raises(spikestore.InvalidArgumentError, match="layer '3'"):
            run_steps(net, "m", 1, store)


def test_tuples_and_dicts_become_sibling_streams(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")

    def stats(s):
        return (s.mean(), {"count": int(s.sum()), "max": s.max().item()})

    with spikestore.Store(tmp_path / "t.zarr") as store:
        mon = ss.OutputMonitor(net, neuron.IFNode, function_on_output=stats, store=store)
        mem = ss.OutputMonitor(net, neuron.IFNode, function_on_output=stats)
        run_steps(net, "m", 2, store)
        for a, b in zip(mem.records, list(mon.records), strict=True):
            assert torch.equal(a[0], b[0]) and a[1] == b[1]
            assert type(b[1]["count"]) is int and type(b[1]["max"]) is float
    run = spikestore.open(tmp_path / "t.zarr")
    assert {"output.0/1", "output.1.count/1", "output.1.max/1"} <= set(run.streams)


def test_unstorable_function_results_raise_at_the_hook(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "u.zarr") as store:
        ss.OutputMonitor(net, neuron.IFNode, function_on_output=lambda s: "a string", store=store)
        with pytest.raises(InvalidValueError, match=r"layer '1'.*str"):
            run_steps(net, "m", 1, store)


def test_tensor_cache_round_trip_as_in_the_tutorial():
    from spikestore import tensor_cache

    spike = torch.randint(0, 2, [1 << 10 | 3]).float()
    spike_b, s_dtype, s_shape, s_padding = tensor_cache.float_spike_to_bool(spike)
    assert spike_b.numel() == (spike.numel() + 7) // 8 and spike_b.dtype == torch.uint8
    assert torch.equal(tensor_cache.bool_spike_to_float(spike_b, s_dtype, s_shape, s_padding), spike)
    np.testing.assert_array_equal(spike_b.numpy(), np.packbits(spike.numpy().astype(bool), bitorder="little"))
    with pytest.raises(spikestore.InvalidValueError):
        tensor_cache.float_spike_to_bool(torch.tensor([0.5, 1.0]))


def test_two_monitors_cannot_silently_share_a_stream(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "o.zarr") as store:
        spikes = ss.OutputMonitor(net, neuron.IFNode, store=store)
        clash = ss.OutputMonitor(net, neuron.IFNode, function_on_output=firing_rate, store=store)
        with pytest.raises(spikestore.InvalidArgumentError, match="quantity="):
            run_steps(net, "m", 1, store)
        clash.remove_hooks()
        rates = ss.OutputMonitor(net, neuron.IFNode, function_on_output=firing_rate, store=store,
                                 quantity="rate")
        run_steps(net, "m", 2, store)
        assert len(rates.records) == 4 and len(spikes.records) == 1 + 4  # hooks run in order
    run = spikestore.open(tmp_path / "o.zarr")
    assert run["output/1"][0].shape == (4, 2, 4) and run["rate/1"][0].shape == (4,)


def test_a_monitor_outliving_its_store_warns_once_and_stops(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "w.zarr") as store:
        mon = ss.OutputMonitor(net, neuron.IFNode, store=store)
        run_steps(net, "m", 1, store)
    with pytest.warns(RuntimeWarning, match="closed"):
        run_steps(net, "m", 2)  # evaluation after the store closed still works
    assert not mon.is_enable() and len(mon.records) == 2


def test_records_view_prints_and_compares_like_a_list(tmp_path):
    net = tutorial_net(neuron.IFNode, "m")
    with spikestore.Store(tmp_path / "v.zarr") as store:
        mem = ss.OutputMonitor(net, neuron.IFNode)
        disk = ss.OutputMonitor(net, neuron.IFNode, store=store)
        assert disk.records == [] and repr(disk.records) == "[]"
        run_steps(net, "m", 1, store)
        assert disk.records == mem.records and disk.records != mem.records[:1]
        assert repr(disk.records) == repr(mem.records)


def test_alternating_binary_and_float_records_do_not_fragment(tmp_path):
    with spikestore.Store(tmp_path / "a.zarr") as store:
        for i in range(10):
            store.append("rate/1", torch.tensor([0.0, 1.0]) if i % 2 else torch.tensor([0.5, 0.25]))
    s = spikestore.open(tmp_path / "a.zarr")["rate/1"]
    assert len(s.segments) == 1 and s.segments[0].encoding == "raw"
    assert [s[i].tolist() for i in range(2)] == [[0.5, 0.25], [0.0, 1.0]]


def test_the_package_exports_the_monitors_and_the_view():
    assert sorted(ss.__all__) == ["AttributeMonitor", "BaseMonitor", "GPUMonitor", "GradInputMonitor",
                                  "GradOutputMonitor", "InputMonitor", "OutputMonitor", "RecordsView"]
    for name in ss.__all__:
        assert getattr(ss, name).__module__.startswith("spikestore.monitor")
    for name in ss.__all__[:-1]:
        if name not in ("BaseMonitor", "GPUMonitor"):  # (GPUMonitor is a thread, as SpikingJelly's)
            assert issubclass(getattr(ss, name), ss.BaseMonitor)
            assert callable(getattr(ss, name).create_hook)


def test_records_view_indexes_like_the_in_memory_list(tmp_path):
    """Single-step mode interleaves the layers' records, so the view must map each index to its layer."""
    net = tutorial_net(neuron.IFNode, "s")
    with spikestore.Store(tmp_path / "i.zarr") as store:
        mem = ss.OutputMonitor(net, neuron.IFNode)
        disk = ss.OutputMonitor(net, neuron.IFNode, store=store)
        run_steps(net, "s", 2, store)
        assert isinstance(disk.records, ss.RecordsView) and isinstance(disk["3"], ss.RecordsView)
        n = len(mem.records)
        assert len(disk.records) == n == 16
        for i in (-1, -n, 5, n - 1):
            assert torch.equal(mem.records[i], disk.records[i]), i
            assert torch.equal(mem[i], disk[i]), i
        for got, want in [(disk.records[3:11:3], mem.records[3:11:3]), (disk["3"][-2:], mem["3"][-2:]),
                          (disk["1"][::-1], mem["1"][::-1])]:
            assert isinstance(got, list) and len(got) == len(want) > 1
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        for bad in (n, -n - 1):
            with pytest.raises(IndexError):
                disk.records[bad]
        with pytest.raises(IndexError):
            disk["1"][n // 2]
        with pytest.raises(KeyError):
            disk["0"]

        disk["1"].clear()  # as clear_recorded_data(): every layer's records are forgotten
        assert len(disk.records) == 0 and disk.name_records_index == {"1": [], "3": []}
        mem.clear_recorded_data()
        run_steps(net, "s", 1, store, seed=4)
        assert disk.records == mem.records and disk.name_records_index == mem.name_records_index
