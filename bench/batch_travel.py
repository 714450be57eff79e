"""Travel the batch assigner saves against greedy first-come matching, on synthetic cities around real towns.

    .venv/bin/python bench/batch_travel.py [--seeds 10] [--orders 200] [--ratio 1.5]

For every region of `vnh/demo_places.json` (the real WGS-84 town centres of 8 counties: city districts, county-level
cities and sparse banners) and several seeds, one batch slot is simulated: N scheduled orders and M = ratio × N
available caregivers scattered around the region's towns. Towns are weighted (a 街道 more than a 镇 or 乡, a 苏木
least, times a random factor; supply is drawn with its own random factor, so it does not follow demand exactly);
orders lie within 1.5 km of a 街道's centre, 5 km of a 镇/乡's, 8 km of a 苏木's (its villages and pastures);
caregivers live within 3 km of a town centre. 4 skills: an order needs one, a caregiver has one or two, and may take
an order only with its skill. Cost = straight-line (great-circle) distance.

Compared, on the same cost matrix: `dispatch.assignment.greedy` (orders in arrival order each take the nearest free
qualified caregiver: first come, first served) and `dispatch.assignment.optimal` (scipy's linear_sum_assignment, the
min-cost matching the batch assigner `dispatch.batch.assign_batch` runs). This is pure computation with no database:
it exercises the very assignment functions the batch assigner calls, fed with distance instead of the matcher's
score (whose other terms are small next to distance and the same for both methods).

Also timed: linear_sum_assignment on a 1,000 × 5,000 instance (uniform random costs, as in design §6, and a
geographic one) against greedy on the same matrix.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import Progress, machine_note, table
from scipy.optimize import linear_sum_assignment

from dispatch.assignment import FORBIDDEN, greedy, optimal, total

EARTH_RADIUS_M = 6_371_008.8
KM_PER_DEGREE = 111.32
SKILLS = 4
SKILL_SHARE = np.array([0.4, 0.3, 0.2, 0.1])  # what orders ask for; caregivers' skills drawn from the same mix
TOWN_WEIGHT = {"街道": 3.0, "镇": 1.0, "乡": 0.8, "苏木": 0.5}
ORDER_SPREAD_KM = {"街道": 1.5, "镇": 5.0, "乡": 5.0, "苏木": 8.0}
CAREGIVER_SPREAD_KM = 3.0
PLURAL = {"district": "city districts", "banner": "banners", "county city": "county-level cities"}


@dataclass(frozen=True)
class RegionTowns:
    code: str
    name: str
    lat: np.ndarray
    lon: np.ndarray
    kind: tuple[str, ...]

    @property
    def kind_of_county(self) -> str:
        """市辖区 (city district), 旗 (banner: sparse, pastoral) or 县级市 (county-level city)."""
        return "district" if self.name.endswith("区") else "banner" if self.name.endswith("旗") else "county city"


def regions() -> list[RegionTowns]:
    raw = json.loads(resources.files("vnh").joinpath("demo_places.json").read_text(encoding="utf-8"))
    out = []
    for r in raw["regions"]:
        towns = [t for t in r["towns"] if t.get("lat") is not None]
        out.append(RegionTowns(r["code"], r["name"], np.array([t["lat"] for t in towns]),
                               np.array([t["lon"] for t in towns]), tuple(t["kind"] for t in towns)))
    return out


def scatter(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, km: np.ndarray) -> tuple[np.ndarray, ...]:
    """Points uniform in discs of radius `km` around (lat, lon)."""
    distance = np.sqrt(rng.uniform(0, 1, len(lat))) * km
    bearing = rng.uniform(0, 2 * math.pi, len(lat))
    return (lat + distance * np.cos(bearing) / KM_PER_DEGREE,
            lon + distance * np.sin(bearing) / (KM_PER_DEGREE * np.cos(np.radians(lat))))


def haversine_matrix(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1)[:, None], np.radians(lat2)[None, :]
    dlat, dlon = p2 - p1, np.radians(lon2)[None, :] - np.radians(lon1)[:, None]
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))


def instance(reg: RegionTowns, n_orders: int, n_caregivers: int, seed: int) -> np.ndarray:
    """The cost matrix (metres; FORBIDDEN without the skill) of one batch slot, rows in arrival order."""
    rng = np.random.default_rng(seed)
    base = np.array([TOWN_WEIGHT[k] for k in reg.kind])
    demand = base * rng.lognormal(0, 0.5, len(base))
    supply = base * rng.lognormal(0, 0.5, len(base))
    towns = rng.choice(len(base), n_orders, p=demand / demand.sum())
    spread = np.array([ORDER_SPREAD_KM[reg.kind[t]] for t in towns])
    olat, olon = scatter(rng, reg.lat[towns], reg.lon[towns], spread)
    homes = rng.choice(len(base), n_caregivers, p=supply / supply.sum())
    clat, clon = scatter(rng, reg.lat[homes], reg.lon[homes], np.full(n_caregivers, CAREGIVER_SPREAD_KM))
    need = rng.choice(SKILLS, n_orders, p=SKILL_SHARE)
    has = np.zeros((n_caregivers, SKILLS), dtype=bool)
    has[np.arange(n_caregivers), rng.choice(SKILLS, n_caregivers, p=SKILL_SHARE)] = True
    second = rng.random(n_caregivers) < 0.5
    has[np.nonzero(second)[0], rng.choice(SKILLS, int(second.sum()), p=SKILL_SHARE)] = True
    cost = haversine_matrix(olat, olon, clat, clon)
    cost[~has[:, need].T] = FORBIDDEN
    return cost


def compare(cost: np.ndarray) -> tuple[float, float, int, int]:
    g, o = greedy(cost), optimal(cost)
    return total(cost, g), total(cost, o), len(g), len(o)


def time_lsa(progress: Progress) -> list[tuple[str, float, float, float, float, float]]:
    rng = np.random.default_rng(1)
    uniform = rng.random((1000, 5000))
    city = next(r for r in regions() if r.code == "150602")
    geo = instance(city, 1000, 5000, 99)
    rows = []
    for label, cost in (("uniform random costs (design §6)", uniform), ("东胜区, distance + skills", geo)):
        lsa, opt, gr, scan = [], [], [], []
        for _ in range(5):
            t = time.perf_counter()
            cost.argmin(axis=1)
            scan.append(time.perf_counter() - t)
            t = time.perf_counter()
            linear_sum_assignment(cost)
            lsa.append(time.perf_counter() - t)
            t = time.perf_counter()
            optimal(cost)
            opt.append(time.perf_counter() - t)
        for _ in range(2):
            t = time.perf_counter()
            greedy(cost)
            gr.append(time.perf_counter() - t)
        rows.append((label, statistics.median(scan) * 1e3, statistics.median(lsa) * 1e3,
                     statistics.median(lsa) / statistics.median(scan), statistics.median(opt) * 1e3,
                     statistics.median(gr) * 1e3))
        progress(f"timed 1,000 x 5,000: {label}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--orders", type=int, default=200, help="scheduled orders in one region's batch slot")
    parser.add_argument("--ratio", type=float, default=1.5, help="available caregivers per order")
    args = parser.parse_args()
    progress = Progress()
    n, m = args.orders, round(args.orders * args.ratio)
    rows: list[tuple[object, ...]] = []
    savings: list[float] = []
    by_kind: dict[str, list[float]] = {"district": [], "banner": [], "county city": []}
    for reg in regions():
        greedy_km, optimal_km, per_seed, unmatched = [], [], [], 0
        for seed in range(args.seeds):
            g, o, ng, no = compare(instance(reg, n, m, seed))
            unmatched += (n - ng) + (n - no)
            greedy_km.append(g / 1000)
            optimal_km.append(o / 1000)
            per_seed.append(100 * (g - o) / g if ng == no else float("nan"))
        comparable = [s for s in per_seed if not math.isnan(s)]  # seeds where both served every order alike
        saving = statistics.median(comparable)
        savings += comparable
        by_kind[reg.kind_of_county] += comparable
        rows.append((f"{reg.code} {reg.name}", reg.kind_of_county, len(reg.kind),
                     statistics.fmean(greedy_km), statistics.fmean(optimal_km),
                     statistics.fmean(greedy_km) / n * 1000, statistics.fmean(optimal_km) / n * 1000,
                     saving, min(comparable), max(comparable), unmatched))
        progress(f"{reg.code} {reg.name}: median saving {saving:.1f}% over {args.seeds} seeds")
    lsa_rows = time_lsa(progress)

    print()
    print(f"Batch assignment: optimal (min-cost) vs greedy first-come nearest ({machine_note()})")
    print(f"one batch slot per region and seed: {n} scheduled orders, {m} caregivers, {SKILLS} skills, straight-line "
          f"distance; {args.seeds} seeds; pure computation on dispatch.assignment.greedy/optimal (no database)")
    print(table(["region", "kind", "towns", "greedy km", "optimal km", "greedy m/order", "optimal m/order",
                 "saving % median", "min", "max", "unmatched"], rows))
    print("(km: total travel of the slot, mean over seeds; saving per seed, its median, min and max over seeds; "
          "unmatched: orders either method left without a caregiver, summed)")
    print(f"median saving over all regions and seeds: {statistics.median(savings):.1f}% ("
          + ", ".join(f"{PLURAL[kind]} {statistics.median(v):.1f}%" for kind, v in by_kind.items() if v) + ")")
    print()
    print("1,000 orders x 5,000 caregivers, median of 5 (greedy: of 2), ms:")
    print(table(["instance", "argmin pass (baseline)", "linear_sum_assignment", "x baseline", "assignment.optimal",
                 "assignment.greedy"], lsa_rows))
    progress("done")


if __name__ == "__main__":
    main()
