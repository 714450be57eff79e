"""Matching against a brute-force reference, and the batch assignment against exhaustive search."""

from __future__ import annotations

import itertools
import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.assignment import FORBIDDEN, greedy, optimal, total
from dispatch.matching import CERTIFICATE_RANK, Candidate, Need, rank
from kernel.settings import MatchingWeights

LEVELS = list(CERTIFICATE_RANK)
SKILLS = ["meal", "bathing", "cleaning", "personal_care", "nursing"]
LANGS = ["zh", "mn", "ug"]

candidates_st = st.lists(
    st.builds(
        Candidate,
        caregiver_id=st.uuids().map(lambda u: uuid.UUID(int=u.int)),
        organization_id=st.just(uuid.UUID(int=1)),
        gender=st.sampled_from(["male", "female"]),
        languages=st.frozensets(st.sampled_from(LANGS), max_size=2),
        skills=st.frozensets(st.sampled_from(SKILLS), max_size=3),
        certificate_level=st.sampled_from(LEVELS),
        distance_m=st.floats(0, 20_000),
        rating=st.none() | st.floats(1, 5),
        visits_today=st.integers(0, 8),
        served_before=st.booleans(),
    ),
    max_size=25, unique_by=lambda c: c.caregiver_id,
)
need_st = st.builds(
    Need,
    required_skill=st.none() | st.sampled_from(SKILLS),
    min_certificate_level=st.sampled_from(LEVELS),
    languages=st.frozensets(st.sampled_from(LANGS), max_size=2),
    preferred_gender=st.none() | st.sampled_from(["male", "female"]),
    emergency=st.booleans(),
)


def reference(need: Need, candidates: list[Candidate], w: MatchingWeights) -> list[uuid.UUID]:
    """Written from the README's definition, independently of dispatch.matching."""
    def ok(c: Candidate) -> bool:
        if need.emergency:
            return True
        if need.required_skill and need.required_skill not in c.skills:
            return False
        if need.min_certificate_level == "medical":
            return c.certificate_level == "medical"
        return LEVELS.index(c.certificate_level) >= LEVELS.index(need.min_certificate_level)

    def cost(c: Candidate) -> float:
        if need.emergency:
            return c.distance_m / 1000
        value = c.distance_m / 1000 * w.distance_per_km
        value -= w.continuity_bonus if c.served_before else 0
        value += w.gender_mismatch if need.preferred_gender and c.gender != need.preferred_gender else 0
        value += w.no_common_language if need.languages and not need.languages & c.languages else 0
        value -= w.rating_per_star * ((c.rating if c.rating is not None else 3.0) - 3.0)
        value += w.per_visit_today * c.visits_today
        return round(value, 6)

    return [c.caregiver_id for c in sorted((c for c in candidates if ok(c)),
                                            key=lambda c: (cost(c), c.distance_m, str(c.caregiver_id)))]


@settings(max_examples=300)
@given(need=need_st, candidates=candidates_st)
def test_ranking_agrees_with_the_brute_force_reference(need: Need, candidates: list[Candidate]) -> None:
    weights = MatchingWeights()
    assert [s.candidate.caregiver_id for s in rank(need, candidates, weights)] == reference(need, candidates, weights)


def test_medical_satisfies_nursing_levels_but_only_medical_satisfies_medical() -> None:
    def cand(level: str) -> Candidate:
        return Candidate(uuid.uuid4(), uuid.uuid4(), "female", frozenset({"zh"}), frozenset({"nursing"}), level, 100)

    senior_need = Need("nursing", "senior", frozenset({"zh"}), None)
    medical_need = Need("nursing", "medical", frozenset({"zh"}), None)
    assert [s.candidate.certificate_level for s in rank(senior_need, [cand("medical"), cand("junior")],
                                                        MatchingWeights())] == ["medical"]
    assert rank(medical_need, [cand("senior")], MatchingWeights()) == []


def _brute_force(cost: np.ndarray) -> float:
    if cost.shape[0] > cost.shape[1]:
        cost = cost.T  # an assignment reads the same both ways; permute the longer side
    rows, cols = cost.shape
    best = 0.0
    best_count = -1
    for perm in itertools.permutations(range(cols), min(rows, cols)):
        pairs = [(r, c) for r, c in zip(range(rows), perm, strict=False) if cost[r, c] < FORBIDDEN]
        value = total(cost, pairs)
        if len(pairs) > best_count or (len(pairs) == best_count and value < best):
            best_count, best = len(pairs), value
    return best


@settings(max_examples=200)
@given(data=st.data(), rows=st.integers(1, 5), cols=st.integers(1, 5))
def test_optimal_assignment_is_never_worse_than_greedy_and_matches_exhaustive_search(
        data: st.DataObject, rows: int, cols: int) -> None:
    values = data.draw(st.lists(st.one_of(st.floats(0, 50), st.just(FORBIDDEN)), min_size=rows * cols,
                                max_size=rows * cols))
    cost = np.array(values, dtype=float).reshape(rows, cols)
    best = optimal(cost)
    assert len({c for _, c in best}) == len(best)
    assert all(cost[r, c] < FORBIDDEN for r, c in best)
    fast = greedy(cost)
    if len(best) == len(fast):
        assert total(cost, best) <= total(cost, fast) + 1e-9
    if len(best) == min(rows, cols) or not any(v >= FORBIDDEN for v in values):
        assert abs(total(cost, best) - _brute_force(cost)) < 1e-6
