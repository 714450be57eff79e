"""`vnh billing verify`: prove the ledger from the database, in SQL.

Checks that every posting balances; that every account's balance (the figures on entitlements and programmes)
equals the sum of its entries; that programmes' reserved and used budget equal the sums over their entitlements;
that entitlements' reserved quota equals their open reservations and their used quota their captures; and that no
entitlement or programme is overdrawn or below zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

MAX_PROBLEMS = 50

_CHECKS: dict[str, str] = {
    "unbalanced posting": """
        SELECT 'posting ' || posting_id || ' sums to ' || sum(amount_fen)
          FROM ledger_entries GROUP BY posting_id HAVING sum(amount_fen) <> 0""",
    "account balance differs from its entries": """
        WITH sums AS (
            SELECT account, account_id, sum(amount_fen) AS total FROM ledger_entries GROUP BY account, account_id
        ), balances AS (
            SELECT 'entitlement_reserved' AS account, id AS account_id, reserved_fen AS balance FROM entitlements
            UNION ALL SELECT 'entitlement_used', id, used_fen FROM entitlements
            UNION ALL SELECT 'program_available', id, budget_fen - reserved_fen - used_fen FROM programs
            UNION ALL SELECT 'program_funding', id, -budget_fen FROM programs
        )
        SELECT coalesce(b.account, s.account) || ':' || coalesce(b.account_id, s.account_id)
               || ' balance ' || coalesce(b.balance, 0) || ' entries ' || coalesce(s.total, 0)
          FROM balances b FULL JOIN sums s ON s.account = b.account AND s.account_id = b.account_id
         WHERE coalesce(b.balance, 0) <> coalesce(s.total, 0)""",
    "programme differs from its entitlements": """
        SELECT 'programme ' || p.id || ' reserved ' || p.reserved_fen || '/' || coalesce(sum(e.reserved_fen), 0)
               || ' used ' || p.used_fen || '/' || coalesce(sum(e.used_fen), 0)
          FROM programs p LEFT JOIN entitlements e ON e.program_id = p.id
         GROUP BY p.id
        HAVING p.reserved_fen <> coalesce(sum(e.reserved_fen), 0) OR p.used_fen <> coalesce(sum(e.used_fen), 0)""",
    "entitlement differs from its reservations": """
        SELECT 'entitlement ' || e.id || ' reserved ' || e.reserved_fen || ' open reservations ' || coalesce(r.held, 0)
          FROM entitlements e
          LEFT JOIN (SELECT entitlement_id, sum(quota_fen) AS held FROM billing_reservations
                      WHERE status = 'reserved' GROUP BY entitlement_id) r ON r.entitlement_id = e.id
         WHERE e.reserved_fen <> coalesce(r.held, 0)""",
    "entitlement differs from its captures": """
        SELECT 'entitlement ' || e.id || ' used ' || e.used_fen || ' captured ' || coalesce(c.used, 0)
          FROM entitlements e
          LEFT JOIN (SELECT entitlement_id, sum(quota_fen) AS used FROM billing_captures
                      GROUP BY entitlement_id) c ON c.entitlement_id = e.id
         WHERE e.used_fen <> coalesce(c.used, 0)""",
    "overdrawn entitlement": """
        SELECT 'entitlement ' || id || ' quota ' || quota_fen || ' reserved ' || reserved_fen || ' used ' || used_fen
          FROM entitlements
         WHERE reserved_fen < 0 OR used_fen < 0 OR reserved_fen + used_fen > quota_fen""",
    "overdrawn programme": """
        SELECT 'programme ' || id || ' budget ' || budget_fen || ' reserved ' || reserved_fen || ' used ' || used_fen
          FROM programs
         WHERE reserved_fen < 0 OR used_fen < 0 OR reserved_fen + used_fen > budget_fen""",
}


@dataclass
class LedgerVerdict:
    ok: bool = True
    postings: int = 0
    entries: int = 0
    entitlements: int = 0
    programs: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = (f"ok={self.ok} postings={self.postings} entries={self.entries} entitlements={self.entitlements} "
                f"programs={self.programs}")
        return "\n".join([head, *self.problems])


async def verify_ledger(session: AsyncSession) -> LedgerVerdict:
    counts = (await session.execute(text(
        "SELECT (SELECT count(*) FROM ledger_postings), (SELECT count(*) FROM ledger_entries), "
        "(SELECT count(*) FROM entitlements), (SELECT count(*) FROM programs)"))).one()
    verdict = LedgerVerdict(postings=counts[0], entries=counts[1], entitlements=counts[2], programs=counts[3])
    for name, sql in _CHECKS.items():
        rows = (await session.execute(text(sql + f" LIMIT {MAX_PROBLEMS}"))).scalars().all()
        for row in rows:
            verdict.ok = False
            if len(verdict.problems) < MAX_PROBLEMS:
                verdict.problems.append(f"{name}: {row}")
    return verdict
