"""dcgan/data/loader.py on tiny arrays (a few milliseconds each, one test about a second): the
data order of (seed, epoch), the checks and their messages, the streaming pipeline's life (one
thread for steps read in order, a restart on a jump, errors and a dead or slow producer reaching
get(), a full queue waiting for the consumer) and the placement budget. (docs/MUTATION.md: these
tests kill the mutants the training-level tests let survive.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import dcgan.data.loader as loader
from dcgan.data.loader import DeviceBatches, StreamBatches, make_batches, placement_budget
from dcgan.errors import UserError

CPU = torch.device("cpu")


def data(n: int = 40):
    """n 1x2x2 uint8 images whose pixels are all 6 * index (so a batch says which rows it holds) and
    labels = index."""
    images = (np.arange(n, dtype=np.uint8) * 6)[:, None, None, None].repeat(2, 2).repeat(2, 3)
    return images, np.arange(n, dtype=np.int64)


def expected(batches, step):
    """Batch `step` by the documented rule: rows [(i*world + rank)*B, +B) of epoch e's permutation."""
    epoch, i = divmod(step, batches.steps_per_epoch)
    perm = torch.randperm(batches.n, generator=torch.Generator().manual_seed(batches.seed * 1_000_003 + epoch))
    start = (i * batches.world + batches.rank) * batches.batch
    return perm[start:start + batches.batch]


# ---- the order and the checks --------------------------------------------------------------------

@pytest.mark.parametrize("kind", [DeviceBatches, StreamBatches])
def test_batches_follow_the_documented_rule_for_seed_epoch_rank_and_world(kind):
    images, labels = data(40)
    for rank in (0, 1):
        with kind(images, labels, 4, 3, CPU, rank=rank, world=2) as b:
            assert b.steps_per_epoch == 5
            for step in (0, 1, 4, 5, 9, 12):
                x, y = b.get(step)
                assert y.tolist() == expected(b, step).tolist(), (rank, step)
                assert torch.equal(x, (y.float() * 6 / 127.5 - 1.0)[:, None, None, None].expand(4, 1, 2, 2))


def test_the_checks_and_their_messages():
    images, labels = data(10)
    cases = [
        (dict(batch=2, rank=0, world=0), "rank 0 of world 0: the world must be >= 1 and 0 <= rank < world"),
        (dict(batch=2, rank=-1, world=1), "rank -1 of world 1: the world must be >= 1 and 0 <= rank < world"),
        (dict(batch=2, rank=1, world=1), "rank 1 of world 1: the world must be >= 1 and 0 <= rank < world"),
        (dict(batch=0, rank=0, world=1), "train.batch=0: the batch must be >= 1"),
        (dict(batch=11, rank=0, world=1),
         "the dataset has 10 images, fewer than one batch of 11; lower train.batch or add data"),
        (dict(batch=4, rank=1, world=3),
         "the dataset has 10 images, fewer than one batch of 12 across 3 ranks (4 each); lower train.batch or add data"),
    ]
    for kw, msg in cases:
        with pytest.raises(UserError) as e:
            DeviceBatches(images, labels, kw["batch"], 0, CPU, rank=kw["rank"], world=kw["world"])
        assert str(e.value) == msg
    # the smallest valid ones: one batch of the whole dataset, a batch of one, the last rank
    assert DeviceBatches(images, labels, 10, 0, CPU).steps_per_epoch == 1
    assert DeviceBatches(images, labels, 1, 0, CPU).steps_per_epoch == 10
    assert DeviceBatches(images, labels, 5, 0, CPU, rank=1, world=2).steps_per_epoch == 1


def test_float_points_are_not_rescaled():
    points = np.array([[3.0, -7.5], [0.25, 100.0]], dtype=np.float32)
    for kind in (DeviceBatches, StreamBatches):
        with kind(points, np.array([1, 0]), 2, 0, CPU) as b:
            x, _ = b.get(0)
            assert sorted(x.tolist()) == [[0.25, 100.0], [3.0, -7.5]] and x.dtype == torch.float32


# ---- the streaming pipeline -----------------------------------------------------------------------

def test_stream_defaults_and_the_prefetch_check():
    images, labels = data(8)
    s = StreamBatches(images, labels, 2, 0, CPU)
    assert s.prefetch == 4 and s.placement == "stream"
    s.get(0)
    assert s._queue.maxsize == 4 and s._thread.daemon and s._thread.name == "dcgan-stream-batches"
    s.close()
    with StreamBatches(images, labels, 2, 0, CPU, prefetch=1) as s:
        assert s.get(3)[1].tolist() == expected(s, 3).tolist()
    with pytest.raises(UserError) as e:
        StreamBatches(images, labels, 2, 0, CPU, prefetch=0)
    assert str(e.value) == "train.prefetch=0: prefetch at least 1 batch"


def test_steps_in_order_keep_one_thread_and_a_jump_restarts_it():
    images, labels = data(40)
    with StreamBatches(images, labels, 4, 1, CPU, prefetch=2) as s:
        s.get(0)
        first = s._thread
        for step in range(1, 25):  # across epochs, in order
            assert s.get(step)[1].tolist() == expected(s, step).tolist()
            assert s._thread is first
        s.get(3)  # a jump back (a rollback)
        assert s._thread is not first and not first.is_alive()
        assert s.get(4)[1].tolist() == expected(s, 4).tolist()


def test_the_permutation_is_drawn_once_per_epoch(monkeypatch):
    images, labels = data(40)
    with StreamBatches(images, labels, 4, 1, CPU, prefetch=1) as s:
        calls = []
        order = s.order
        monkeypatch.setattr(s, "order", lambda epoch: calls.append(epoch) or order(epoch))
        for step in range(20):  # two epochs of 10 steps
            s.get(step)
        assert calls[:2] == [0, 1] and len(calls) <= 3  # the producer may be an epoch ahead


def test_a_pipeline_out_of_step_is_an_error():
    images, labels = data(8)
    with StreamBatches(images, labels, 2, 0, CPU) as s:
        s.get(0)
        s._next = 5  # as if the pipeline had been started at 5: it delivers 1
        with pytest.raises(RuntimeError) as e:
            s.get(5)
        assert str(e.value) == "the batch stream delivered step 1 for step 5"


def test_an_error_in_the_producer_reaches_get_and_leaves_no_pipeline():
    images, labels = data(8)
    s = StreamBatches(images, labels[:2], 2, 0, CPU)  # labels of 2 rows for 8 images: an index error
    with pytest.raises(IndexError):
        for step in range(4):
            s.get(step)
    assert s._thread is None and s._queue is None and s._stop is None
    s.labels = labels  # mended: get() starts a new pipeline
    assert s.get(0)[1].tolist() == expected(s, 0).tolist()
    s.close()


def test_a_producer_that_ends_without_a_batch_is_an_error(monkeypatch):
    images, labels = data(8)
    s = StreamBatches(images, labels, 2, 0, CPU)
    monkeypatch.setattr(s, "_produce", lambda step, out, stop: None)
    with pytest.raises(RuntimeError) as e:
        s.get(0)
    assert str(e.value) == "the batch-streaming thread stopped without a batch"


def test_a_slow_producer_is_waited_for(monkeypatch):
    """A first batch that takes longer than get()'s 1 s poll still arrives."""
    images, labels = data(8)
    s = StreamBatches(images, labels, 2, 0, CPU)
    produce = s._produce

    def slow(step, out, stop):
        time.sleep(1.2)
        produce(step, out, stop)

    monkeypatch.setattr(s, "_produce", slow)
    with s:
        assert s.get(0)[1].tolist() == expected(s, 0).tolist()


def test_a_full_queue_waits_for_the_consumer():
    """The producer, a batch ahead and blocked on a full queue for longer than its 0.1 s put
    timeout, keeps waiting (it stops only when told to)."""
    images, labels = data(40)
    with StreamBatches(images, labels, 4, 2, CPU, prefetch=1) as s:
        s.get(0)
        time.sleep(0.35)
        for step in range(1, 6):
            assert s.get(step)[1].tolist() == expected(s, step).tolist()
        thread = s._thread
    assert not thread.is_alive()


def test_close_then_get_and_close_twice():
    images, labels = data(8)
    s = StreamBatches(images, labels, 2, 0, CPU)
    s.close()  # never started: nothing to stop
    s.get(1)
    s.close()
    s.close()
    assert s._thread is None
    assert not [t for t in threading.enumerate() if t.name == "dcgan-stream-batches" and t.is_alive()]


# ---- placement ---------------------------------------------------------------------------------------

def test_host_memory_is_read_from_proc_meminfo_else_from_sysconf(monkeypatch):
    with open("/proc/meminfo") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    got = loader._host_available()
    assert abs(got - kb * 1024) < 256 * 2**20  # read a moment later: within 256 MB
    assert got % 1024 == 0

    def no_proc(path, *a, **k):
        raise OSError("no /proc here")

    monkeypatch.setattr(loader, "open", no_proc, raising=False)
    import os

    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}[name])
    assert loader._host_available() == 4096 * 1000

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", no_sysconf)
    assert loader._host_available() is None


def test_placement_budget_on_the_host(monkeypatch):
    monkeypatch.setattr(loader, "_host_available", lambda: 8 * 2**30)
    assert placement_budget("cpu") == (4 * 2**30, "half of the 8.0 GiB of available host memory")
    assert placement_budget(CPU, world=2) == (2 * 2**30, "half of the 8.0 GiB of available host memory, shared by 2 ranks")
    monkeypatch.setattr(loader, "_host_available", lambda: None)
    assert placement_budget("cpu", world=4) == (loader.SMALL_BYTES, "available host memory unknown")
    assert loader.SMALL_BYTES == 1 << 30


class Data:
    def __init__(self, n=40):
        self.images, self.labels = data(n)


def test_make_batches_picks_the_placement_and_says_why(monkeypatch):
    d = Data(40)  # 160 bytes of images + 320 of labels
    need = d.images.nbytes + d.labels.nbytes
    assert need == 480
    logs = []
    b = make_batches(d, 4, 0, "cpu", budget=need, log=logs.append)
    assert isinstance(b, DeviceBatches) and b.device == CPU
    b = make_batches(d, 4, 0, CPU, budget=need - 1, log=logs.append)
    assert isinstance(b, StreamBatches) and b.prefetch == 4
    b.close()
    b = make_batches(d, 4, 0, CPU, placement="stream", prefetch=2, rank=1, world=2, log=logs.append)
    assert isinstance(b, StreamBatches) and (b.prefetch, b.rank, b.world, b.batch, b.seed) == (2, 1, 2, 4, 0)
    b.close()
    b = make_batches(d, 4, 7, CPU, placement="device", rank=1, world=2, log=logs.append)
    assert isinstance(b, DeviceBatches) and (b.rank, b.world, b.seed) == (1, 2, 7)
    monkeypatch.setattr(loader, "placement_budget", lambda device, world: (need * world, f"stub for {world}"))
    b = make_batches(d, 4, 0, CPU, world=2, log=logs.append)
    assert isinstance(b, DeviceBatches)
    assert logs == [
        "data: device placement on cpu (0.00 GiB of data, within 0.00 GiB (the given budget))",
        "data: stream placement on cpu (0.00 GiB of data, over 0.00 GiB (the given budget))",
        "data: stream placement on cpu (train.placement)",
        "data: device placement on cpu (train.placement)",
        "data: device placement on cpu (0.00 GiB of data, within 0.00 GiB (stub for 2))",
    ]
    assert isinstance(make_batches(d, 4, 0, CPU), DeviceBatches)  # no log: nothing said, nothing fails
    with pytest.raises(UserError) as e:
        make_batches(d, 4, 0, CPU, placement="host")
    assert str(e.value) == "train.placement='host': choose one of auto, device, stream"


def test_device_batches_live_on_the_asked_device_and_can_start_in_any_epoch():
    """The "meta" device stands in for a GPU (no memory, shapes only): the copy of the dataset, the
    permutation and the batches are all there. A first get() in epoch 1 (a resumed run) draws that
    epoch's permutation."""
    images, labels = data(10)
    b = DeviceBatches(images, labels, 2, 0, "meta")
    assert b.images.device.type == b.labels.device.type == b.order(0).device.type == "meta"
    x, y = b.get(0)
    assert x.device.type == y.device.type == "meta" and x.shape == (2, 1, 2, 2) and x.dtype == torch.float32
    c = DeviceBatches(images, labels, 2, 0, CPU)
    assert c.get(7)[1].tolist() == expected(c, 7).tolist()  # step 7: epoch 1, the first one read
    with StreamBatches(images, labels, 2, 0, "meta") as s:  # gathered on the host, then moved
        x, y = s.get(0)
        assert x.device.type == y.device.type == "meta" and x.dtype == torch.float32


def test_make_batches_says_sizes_in_gib_and_defaults_to_one_rank(monkeypatch):
    """Sizes are said in GiB (2^30 bytes): 24 GiB of (broadcast, never allocated) data against a
    budget of 1.5 GiB streams. One rank unless told otherwise. (The device placement is a stub
    here, so that no change to the rule can copy 24 GiB.)"""
    class Big:
        images = np.broadcast_to(np.zeros((1, 1, 4, 4), dtype=np.uint8), (2**30, 1, 4, 4))  # 16 GiB
        labels = np.broadcast_to(np.zeros(1, dtype=np.int64), (2**30,))  # 8 GiB

    monkeypatch.setattr(loader, "DeviceBatches", lambda *a, **k: "device placement")
    logs = []
    b = make_batches(Big(), 4, 0, CPU, budget=3 * 2**29, log=logs.append)
    assert isinstance(b, StreamBatches) and b.world == 1 and b.steps_per_epoch == 2**28
    assert logs == ["data: stream placement on cpu (24.00 GiB of data, over 1.50 GiB (the given budget))"]
    assert make_batches(Big(), 4, 0, CPU, budget=24 * 2**30) == "device placement"
    monkeypatch.undo()
    d = Data(40)
    assert make_batches(d, 4, 0, CPU, placement="device").steps_per_epoch == 10


def test_placement_budget_is_a_whole_number_of_bytes(monkeypatch):
    monkeypatch.setattr(loader, "_host_available", lambda: 8 * 2**30 + 7)
    budget, _ = placement_budget("cpu", world=2)
    assert budget == (8 * 2**30 + 7) // 4 and isinstance(budget, int)


def test_a_stream_dropped_without_ever_starting_leaves_nothing_behind(monkeypatch):
    """Deleting a StreamBatches whose pipeline never started (or was closed), or whose __init__
    stopped at a check, raises nothing, not even inside __del__ (where Python would only print it)."""
    import gc
    import sys

    raised = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: raised.append(u))
    images, labels = data(8)
    with pytest.raises(UserError):
        StreamBatches(images, labels, 2, 0, CPU, prefetch=0)  # refused before it has a stop event
    gc.collect()
    s = StreamBatches(images, labels, 2, 0, CPU)
    del s
    s = StreamBatches(images, labels, 2, 0, CPU)
    s.get(0)
    s.close()
    del s
    gc.collect()
    assert raised == []
