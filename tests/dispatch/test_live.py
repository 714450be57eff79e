"""`live.nearby` against the real Redis: nearest first, stale and off-duty positions left out."""

from __future__ import annotations

import uuid
from datetime import timedelta

from dispatch import live
from kernel.clock import ManualClock
from kernel.runtime import Runtime
from tests.factories import XINI_TOWN, offset


async def test_nearby_answers_fresh_on_duty_caregivers_nearest_first(runtime: Runtime) -> None:
    assert isinstance(runtime.clock, ManualClock)
    clock = runtime.clock
    near, far, stale, off_duty, outside = (uuid.uuid4() for _ in range(5))
    for caregiver, north_m in ((near, 200), (far, 900), (stale, 100), (off_duty, 50), (outside, 12_000)):
        await live.set_duty(runtime, caregiver, True)
        lat, lon = offset(*XINI_TOWN, north_m=north_m)
        at = clock.now() - (runtime.settings.dispatch.position_max_age + timedelta(seconds=1) if caregiver == stale
                            else timedelta(seconds=5))
        await live.set_position(runtime, caregiver, lat, lon, at)
    # off duty without the GEO entry removed (as a crashed instance might leave it): the duty set decides
    await runtime.redis.srem(runtime.redis_key("cg", "on_duty"), str(off_duty))

    found = await live.nearby(runtime, *XINI_TOWN, 10_000, 50)

    assert [caregiver for caregiver, _ in found] == [near, far]
    assert abs(found[0][1] - 200) < 2 and abs(found[1][1] - 900) < 5  # metres, as GEOSEARCH measures them
    assert await live.nearby(runtime, *offset(*XINI_TOWN, north_m=-50_000), 1_000, 50) == []
