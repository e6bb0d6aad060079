"""The limit state every limiter backend holds: atomic admission over buckets and budgets,
refill, reconciliation, revocation (a manual clock: nothing sleeps)."""

from __future__ import annotations

import pytest

from noa.access.limits import BucketLevel, Decision, LimitState, Reserve, Take

T0 = 1_000.0


def test_a_bucket_admits_its_limit_then_refuses_with_retry_after() -> None:
    state = LimitState()
    take = Take("rpm:key:a", 6, 1)  # 6 per minute: one every 10 s
    results = [state.admit([take], [], T0) for _ in range(8)]
    assert [r.allowed for r in results] == [True] * 6 + [False] * 2
    refused = results[-1]
    assert (refused.reason, refused.scope) == ("rpm", "rpm:key:a")
    assert refused.retry_after_s == pytest.approx(10.0)
    assert results[0].levels["rpm:key:a"] == BucketLevel(6, 5, 10.0)
    assert results[5].levels["rpm:key:a"] == BucketLevel(6, 0, 60.0)
    assert state.admit([take], [], T0 + 9.9).allowed is False
    assert state.admit([take], [], T0 + 10).allowed is True  # refilled one


def test_all_or_nothing_across_scopes() -> None:
    state = LimitState()
    key, team = Take("rpm:key:a", 100, 1), Take("rpm:team:t", 2, 1)
    assert state.admit([key, team], [], T0).allowed
    assert state.admit([key, team], [], T0).allowed
    refused = state.admit([key, team], [], T0)
    assert (refused.allowed, refused.scope) == (False, "rpm:team:t")
    assert refused.levels["rpm:key:a"].remaining == 98  # the key's bucket was not charged
    other_key = Take("rpm:key:b", 100, 1)
    assert not state.admit([other_key, team], [], T0).allowed  # the team is shared


def test_tokens_reserved_then_reconciled() -> None:
    state = LimitState()
    reserve = Take("tpm:key:a", 1000, 600)
    assert state.admit([reserve], [], T0).allowed
    assert not state.admit([reserve], [], T0).allowed  # 400 left
    state.adjust({"tpm:key:a": (1000, -500)}, {}, T0)  # used 100 of the 600 reserved
    decision = state.admit([reserve], [], T0)
    assert decision.allowed and decision.levels["tpm:key:a"].remaining == 300
    state.adjust({"tpm:key:a": (1000, 900)}, {}, T0)  # used far more than reserved: a debt
    assert state.admit([Take("tpm:key:a", 1000, 1)], [], T0 + 30).allowed is False
    assert state.admit([Take("tpm:key:a", 1000, 1)], [], T0 + 60).allowed is True


def test_a_request_larger_than_the_limit_waits_a_whole_window() -> None:
    decision = LimitState().admit([Take("tpm:key:a", 100, 500)], [], T0)
    assert not decision.allowed and decision.retry_after_s == 60


def test_budgets_reserve_reconcile_and_reset_with_the_period() -> None:
    state = LimitState()

    def budget(amount: float, seed: float = 0.0) -> Reserve:
        return Reserve("budget:key:a:month:2026-11", 1.0, amount, 3600, seed)

    first = state.admit([], [budget(0.4, seed=0.3)], T0)  # 0.30 spent before this process
    assert first.allowed and first.spent["budget:key:a:month:2026-11"] == pytest.approx(0.7)
    refused = state.admit([], [budget(0.4)], T0)
    assert (refused.allowed, refused.reason, refused.retry_after_s) == (False, "budget", 3600)
    state.adjust({}, {"budget:key:a:month:2026-11": -0.35}, T0)  # cost 0.05, not 0.40
    assert state.admit([], [budget(0.4)], T0).allowed
    assert state.admit([], [budget(0.4)], T0 + 3600).allowed  # a new period starts at zero


def test_concurrent_reservations_never_overspend_by_more_than_one() -> None:
    state = LimitState()
    accepted = sum(
        state.admit([], [Reserve("budget:team:t:day:1", 1.0, 0.03, 60)], T0).allowed
        for _ in range(50)
    )
    assert accepted == 33  # 33 * 0.03 <= 1.0 < 34 * 0.03


def test_revoked_principals_are_refused_before_anything_is_taken() -> None:
    state = LimitState()
    take = Take("rpm:key:a", 1, 1)
    state.revoke("key_a")
    refused = state.admit([take], [], T0, principal="key_a")
    assert (refused.allowed, refused.reason) == (False, "revoked")
    assert state.admit([take], [], T0, principal="key_b").allowed  # the bucket was untouched


def test_decisions_cross_the_wire_unchanged() -> None:
    state = LimitState()
    decision = state.admit([Take("rpm:key:a", 5, 1)], [Reserve("budget:k", 2, 1, 60)], T0)
    assert Decision.from_wire(decision.to_wire()) == decision


def test_prune_forgets_only_what_equals_a_fresh_state() -> None:
    state = LimitState()
    state.admit([Take("rpm:key:a", 5, 1)], [Reserve("budget:k", 2, 1, 60)], T0)
    assert state.prune(T0 + 30) == 0
    assert state.prune(T0 + 60) == 2
