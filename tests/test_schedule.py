"""The learning-rate schedule against hand-written score sequences, and the device warm-up."""
from __future__ import annotations

import pytest
import tensorflow as tf

from learning.evaluators import AccuracyEvaluator
from learning.schedule import BestScore, EarlyStop, PlateauSchedule, WarmupRate


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
