"""Safe zones (pure): a circle (centre, radius) or a polygon, WGS-84, as stored by `PUT /v1/elders/{id}/monitoring`.

Points on the boundary count as inside. Polygons are built with shapely once per distinct zone and cached.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from shapely import Point, Polygon
from shapely.prepared import PreparedGeometry, prep

from kernel.geo import haversine_m, to_wgs84


def normalise(zone: dict[str, Any]) -> dict[str, Any]:
    """The zone as stored: WGS-84 (converted from GCJ-02/BD-09 when given so), polygon points as [lat, lon]."""
    crs = zone.get("crs", "wgs84")
    if zone["type"] == "circle":
        lat, lon = to_wgs84(zone["center"]["lat"], zone["center"]["lon"], crs)
        return {"type": "circle", "center": {"lat": lat, "lon": lon}, "radius_m": float(zone["radius_m"]),
                "for_s": int(zone.get("for_s", 0))}
    points = [to_wgs84(p["lat"], p["lon"], crs) for p in zone["points"]]
    return {"type": "polygon", "points": [[lat, lon] for lat, lon in points], "for_s": int(zone.get("for_s", 0))}


def polygon_problem(points: list[list[float]]) -> str | None:
    """Why these points make no usable zone (self-intersecting, no area), or None."""
    polygon = Polygon([(lon, lat) for lat, lon in points])
    if not polygon.is_valid:
        return "the polygon crosses itself"
    if polygon.area <= 0:
        return "the polygon has no area"
    return None


@lru_cache(maxsize=4096)
def _prepared(points_json: str) -> PreparedGeometry[Polygon]:
    points = json.loads(points_json)
    return prep(Polygon([(lon, lat) for lat, lon in points]))


def contains(zone: dict[str, Any], lat: float, lon: float) -> bool:
    if zone["type"] == "circle":
        center = zone["center"]
        return bool(haversine_m(center["lat"], center["lon"], lat, lon) <= zone["radius_m"])
    return bool(_prepared(json.dumps(zone["points"])).covers(Point(lon, lat)))
