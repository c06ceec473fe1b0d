"""Contention: the share of this run's cores that other processes used between two looks (``/proc/stat``
minus our own CPU time), one warning when it passes the threshold, and what summary.json records."""
import logging

import pytest

from uda.engine import contention as ct


class Clock:
    """/proc/stat's busy seconds, our own CPU seconds and the wall clock, advanced by the test."""

    def __init__(self, monkeypatch, tmp_path):
        self.busy, self.own, self.t, self.stat = 0.0, 0.0, 100.0, tmp_path / "stat"
        monkeypatch.setattr(ct, "STAT", self.stat)
        monkeypatch.setattr(ct, "cores", lambda: [0, 1])
        monkeypatch.setattr(ct, "_own_s", lambda: self.own)
        monkeypatch.setattr(ct.time, "monotonic", lambda: self.t)
        self.write()

    def write(self):
        tick = ct.os.sysconf("SC_CLK_TCK")
        half = round(self.busy * tick / 2)  # split over cpu0 and cpu1; cpu2 is not ours and always busy
        self.stat.write_text(f"cpu  1 2 3 4 5 6 7 8\ncpu0 {half} 0 0 999 0 0 0 0\ncpu1 {half} 0 0 999 0 0 0 0\n"
                             f"cpu2 {10 ** 9} 0 0 0 0 0 0 0\n")

    def advance(self, seconds, ours, others):
        self.t += seconds
        self.own += ours
        self.busy += ours + others
        self.write()


def test_a_quiet_machine_is_not_contended(monkeypatch, tmp_path):
    clock = Clock(monkeypatch, tmp_path)
    c = ct.Contention()
    clock.advance(10, ours=19.0, others=0.2)  # we kept both cores busy; others 1% of them
    assert c.look("by step 50") == pytest.approx(0.01, abs=0.002)
    assert c.record() == {"contended": False, "contention_max_share": 0.01}


def test_another_busy_process_is_said_once_and_recorded(monkeypatch, tmp_path, caplog):
    clock = Clock(monkeypatch, tmp_path)
    c = ct.Contention()
    with caplog.at_level(logging.WARNING, logger="uda"):
        clock.advance(10, ours=5.0, others=15.0)  # a second training: 75% of our two cores
        assert c.look("by step 50") == pytest.approx(0.75, abs=0.002)
        clock.advance(10, ours=5.0, others=14.0)
        c.look("by step 100")
    assert caplog.messages == [
        "other processes used 75% of this run's 2 cores by step 50: its timings are not this machine's speed "
        "(summary.json records contended: true); run one training at a time, or give each its own cores "
        "(taskset, trainer.threads)"]
    assert c.record() == {"contended": True, "contention_max_share": 0.75}


def test_looks_closer_than_the_minimum_interval_say_nothing(monkeypatch, tmp_path):
    clock = Clock(monkeypatch, tmp_path)
    c = ct.Contention()
    clock.advance(0.5, ours=0.0, others=1.0)
    assert c.look("by step 2") is None and c.record()["contended"] is None


def test_without_proc_stat_nothing_is_measured(monkeypatch, tmp_path):
    monkeypatch.setattr(ct, "STAT", tmp_path / "absent")
    c = ct.Contention()
    assert c.look("by step 50") is None and c.record()["contended"] is None


def test_threads_default_to_omp_num_threads_else_the_cores_we_may_use(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert ct.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(ct.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert ct.cores() == [0, 2, 5] and ct.default_threads() == 3


def test_our_own_time_counts_this_process():
    assert ct._own_s() > 0
