"""One process accepting one offer once every worker is at the start line (tests/dispatch/test_concurrent_accept.py
runs several).

Usage: python accept_worker.py '<json: offer_id, caregiver_id, organization_id, clock, race>'
Settings (URLs, keys) come from the environment. The barrier is in Redis: the worker, connected to PostgreSQL, pushes
"reached <caregiver>" to the list `<race>:log`, waits for a token on `<race>:go` (the test pushes one per worker once
all have reached it), pushes "accepting <caregiver>" and accepts.
Prints one JSON line: {"ok": bool, "code": str | null}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime


async def main(args: dict[str, str]) -> dict[str, object]:
    from dispatch.offers import accept_offer
    from kernel.authz import Principal, grant
    from kernel.clock import ManualClock
    from kernel.errors import DomainError
    from kernel.runtime import Runtime
    from kernel.settings import Settings

    rt = Runtime.build(Settings(), clock=ManualClock(datetime.fromisoformat(args["clock"])))
    access = grant(Principal(user_id=args["caregiver_id"], username="worker", role="caregiver",
                             organization_id=args["organization_id"], caregiver_id=args["caregiver_id"]),
                   "offers.respond")
    race = rt.redis_key(args["race"])
    await rt.database.ping()  # connect before the start line, so all race from the same point
    await rt.redis.rpush(f"{race}:log", f"reached {args['caregiver_id']}")
    if not await rt.redis.blpop([f"{race}:go"], timeout=120):
        await rt.close()
        return {"ok": False, "code": "barrier_not_released"}
    await rt.redis.rpush(f"{race}:log", f"accepting {args['caregiver_id']}")
    try:
        async with rt.database.unit_of_work() as session:
            await accept_offer(session, rt, access, args["offer_id"])
        return {"ok": True, "code": None}
    except DomainError as exc:
        return {"ok": False, "code": exc.code}
    finally:
        await rt.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
