"""The learning-rate schedule against hand-written score sequences, and the device warm-up."""
from __future__ import annotations

import pytest
import tensorflow as tf

from common.errors import ConfigError
from learning.config import OptimConfig
from learning.evaluators import AccuracyEvaluator
from learning.schedule import (AnnealedRate, BestScore, EarlyStop, PlateauSchedule, WarmupRate,
                               device_rate)


def test_plateau_rule_decays_and_saves_on_the_specified_epochs():
    schedule = PlateauSchedule(1.0, patience=2, decay=0.1, eps=1e-8)
    best = BestScore(AccuracyEvaluator(), score_threshold=1e-4)
    scores = [0.5, 0.6, 0.6, 0.55, 0.6, 0.6001, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    improved, rates, bad = [], [], []
    for epoch, score in enumerate(scores, start=1):
        improved.append(best.update(epoch, score))
        schedule.end_epoch(improved[-1])
        rates.append(schedule.learning_rate)
        bad.append(schedule.num_bad_epochs)
    # 0.6 is not > 0.6 * 1.0001; 0.6001 is > 0.60006. Bad counts 1, 2, 3 > patience -> decay.
    assert improved == [True, True, False, False, False, True, True,
                        False, False, False, False, False, False]
    assert rates == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001])
    assert bad == [0, 0, 1, 2, 0, 0, 0, 1, 2, 0, 1, 2, 0]
    assert best.score == 0.7 and best.epoch == 7


def test_plateau_rule_skips_a_decay_smaller_than_eps_but_restarts_the_count():
    schedule = PlateauSchedule(1e-8, patience=0, decay=0.1, eps=1e-8)
    for _ in range(3):
        # 1e-8 - 1e-9 = 9e-9 is not > eps: the rate stays, the bad count restarts.
        assert schedule.end_epoch(False) is False
        assert schedule.learning_rate == 1e-8 and schedule.num_bad_epochs == 0


def test_schedule_and_best_score_states_round_trip():
    schedule = PlateauSchedule(0.5, patience=1, decay=0.5, eps=0.0)
    best = BestScore(AccuracyEvaluator(), 0.0)
    best.update(3, 0.8)
    for improved in (False, False, False):
        schedule.end_epoch(improved)
    other = PlateauSchedule(0.5, patience=1, decay=0.5, eps=0.0)
    other.set_state(schedule.get_state())
    other_best = BestScore(AccuracyEvaluator(), 0.0)
    other_best.set_state(best.get_state())
    assert (other.learning_rate, other.num_bad_epochs) == (0.25, 1)
    assert (other_best.score, other_best.epoch) == (0.8, 3)
    # The next epoch decides the same way for both.
    assert other.end_epoch(False) is True and schedule.end_epoch(False) is True


def test_device_warmup_equals_the_host_rule_step_by_step():
    schedule = PlateauSchedule(0.4, patience=0, decay=0.5, eps=0.0, warmup_steps=4)
    rate = WarmupRate(tf.Variable(0.4), warmup_steps=4)
    device = [float(rate(tf.constant(i, tf.int64))) for i in range(6)]   # optimizer counter
    host = [schedule.rate_at(step) for step in range(1, 7)]
    assert device == pytest.approx(host)
    assert host == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    # The plateau rate is read from the variable at every call: no retrace, no host value.
    rate.base.assign(0.2)
    assert float(rate(tf.constant(1, tf.int64))) == pytest.approx(0.1)
    assert float(WarmupRate(tf.Variable(0.3), 0)(tf.constant(0, tf.int64))) == pytest.approx(0.3)


def test_early_stop_counts_bad_epochs_after_the_warm_up_and_resets_on_a_new_best():
    stop = EarlyStop(2)
    # (improved, warmed up) per epoch: the first two bad epochs fall in the warm-up.
    epochs = [(True, False), (False, False), (False, False), (False, True), (True, True),
              (False, True), (False, True)]
    decisions = [stop.end_epoch(improved, warmed_up=warm) for improved, warm in epochs]
    assert decisions == [False, False, False, False, False, False, True]
    assert stop.get_state() == {"bad_epochs": 2}
    again = EarlyStop(3)
    again.set_state(stop.get_state())        # a resumed run with a larger patience goes on
    assert not again.triggered and again.end_epoch(False, warmed_up=True)
    never = EarlyStop(None)
    assert not any(never.end_epoch(False, warmed_up=True) for _ in range(50))
@pytest.mark.parametrize("shape, factors", [
    # p = (step - 2) / 4 after 2 warm-up steps: 0, 0, 0, 1/4, 1/2, 3/4.
    ("cosine", [0.5, 1.0, 1.0, 0.8535534, 0.5, 0.1464466]),
    ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]),
])
def test_annealed_rate_warms_up_then_falls_towards_zero_over_the_run(shape, factors):
    rate = AnnealedRate(tf.Variable(0.4), warmup_steps=2, total_steps=6, shape=shape)
    device = [float(rate(tf.constant(i, tf.int64))) for i in range(6)]
    assert device == pytest.approx([0.4 * f for f in factors], rel=1e-5)
    # Past the run's end (a resume with fewer epochs) the rate stays at 0, never negative.
    assert float(rate(tf.constant(9, tf.int64))) == pytest.approx(0.0, abs=1e-7)
    again = AnnealedRate.from_config(rate.get_config())
    assert [float(again(tf.constant(i, tf.int64))) for i in range(6)] == pytest.approx(device)


def test_device_rate_follows_the_schedule_option_and_refuses_what_it_cannot_compute():
    base = tf.Variable(0.1)
    assert type(device_rate(base, schedule="plateau", warmup_steps=3, num_epochs=2,
                            steps_per_epoch=None)) is WarmupRate
    cosine = device_rate(base, schedule="cosine", warmup_steps=3, num_epochs=2,
                         steps_per_epoch=5)
    assert (cosine.total_steps, cosine.warmup_steps, cosine.shape) == (10, 3, "cosine")
    with pytest.raises(ConfigError, match="steps per epoch before training"):
        device_rate(base, schedule="linear", warmup_steps=0, num_epochs=2, steps_per_epoch=None)
    with pytest.raises(ConfigError, match="more steps than the warm-up: 10 steps in all, 10"):
        device_rate(base, schedule="cosine", warmup_steps=10, num_epochs=2, steps_per_epoch=5)


def test_annealing_schedules_switch_the_plateau_decay_off():
    assert OptimConfig(learning_rate_decay=0.5).plateau_decay == 0.5
    assert OptimConfig(learning_rate_decay=0.5, schedule="cosine").plateau_decay == 1.0
    with pytest.raises(ConfigError, match=r"--schedule \(schedule\) must be one of plateau, "):
        OptimConfig(schedule="step")
