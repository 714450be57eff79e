"""Who may serve an order and how well: pure qualification and scoring (no I/O), property-tested against a
brute-force reference. `candidates.py` gathers the inputs; this module decides.

Score is a cost in km-equivalents, lower is better:
  distance_km × distance_per_km
  − continuity_bonus            if the caregiver served this elder before
  + gender_mismatch             if the elder prefers the other gender
  + no_common_language          if they share no language
  − rating_per_star × (rating − 3)   (no rating counts as 3)
  + per_visit_today × visits already assigned today
Ties break on distance, then caregiver id, so a ranking is reproducible.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from kernel.settings import MatchingWeights

CERTIFICATE_RANK = {"none": 0, "junior": 1, "intermediate": 2, "senior": 3, "medical": 4}


@dataclass(frozen=True)
class Need:
    """What an order asks of a caregiver."""

    required_skill: str | None
    min_certificate_level: str
    languages: frozenset[str]
    preferred_gender: str | None
    emergency: bool = False


@dataclass(frozen=True)
class Candidate:
    caregiver_id: uuid.UUID
    organization_id: uuid.UUID
    gender: str
    languages: frozenset[str]
    skills: frozenset[str]
    certificate_level: str
    distance_m: float
    rating: float | None = None
    visits_today: int = 0
    served_before: bool = False


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: float
    reasons: dict[str, float] = field(default_factory=dict)


def certificate_satisfies(have: str, need: str) -> bool:
    """`medical` (licensed nurse or doctor) satisfies any level; a medical service needs `medical`."""
    if need == "medical":
        return have == "medical"
    return CERTIFICATE_RANK[have] >= CERTIFICATE_RANK[need]


def qualifies(need: Need, candidate: Candidate) -> bool:
    if need.emergency:  # the K nearest regardless of skill (decisions §3)
        return True
    if need.required_skill is not None and need.required_skill not in candidate.skills:
        return False
    return certificate_satisfies(candidate.certificate_level, need.min_certificate_level)


def score(need: Need, candidate: Candidate, weights: MatchingWeights) -> Scored:
    reasons: dict[str, float] = {"distance": candidate.distance_m / 1000 * weights.distance_per_km}
    if candidate.served_before:
        reasons["continuity"] = -weights.continuity_bonus
    if need.preferred_gender is not None and candidate.gender != need.preferred_gender:
        reasons["gender_preference"] = weights.gender_mismatch
    if need.languages and not (need.languages & candidate.languages):
        reasons["no_common_language"] = weights.no_common_language
    rating = candidate.rating if candidate.rating is not None else 3.0
    if rating != 3.0:
        reasons["rating"] = -weights.rating_per_star * (rating - 3.0)
    if candidate.visits_today:
        reasons["workload"] = weights.per_visit_today * candidate.visits_today
    return Scored(candidate, round(sum(reasons.values()), 6), {k: round(v, 4) for k, v in reasons.items()})


def rank(need: Need, candidates: Iterable[Candidate], weights: MatchingWeights) -> list[Scored]:
    """Qualified candidates, best first; emergencies rank by distance alone (the nearest go first)."""
    qualified = [c for c in candidates if qualifies(need, c)]
    if need.emergency:
        return [Scored(c, round(c.distance_m / 1000, 6), {"distance": round(c.distance_m / 1000, 4)})
                for c in sorted(qualified, key=lambda c: (c.distance_m, str(c.caregiver_id)))]
    scored = [score(need, c, weights) for c in qualified]
    return sorted(scored, key=lambda s: (s.score, s.candidate.distance_m, str(s.candidate.caregiver_id)))
