"""Authorization: one matrix (permission → role → scope), applied by one dependency, `authorize(permission)`.

Scopes: `own` (a caregiver's own offers and visits; an elder login's own elders), `organization` (an org admin's
organisation), `region` (a dispatcher's, auditor's or finance officer's region code, covering a whole level as
`kernel.regions.scope_covers` says), `all`. Objects outside the caller's scope answer 404, never 403, so existence
does not leak. The route-walking test reads this same matrix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from sqlalchemy import ColumnElement, SQLColumnExpression, false, true

from kernel.errors import NotFound, PermissionDenied
from kernel.regions import scope_covers

Role = Literal["admin", "dispatcher", "org_admin", "caregiver", "elder", "auditor", "finance"]
Scope = Literal["own", "organization", "region", "all"]
ROLES: tuple[Role, ...] = get_args(Role)
RegionColumn = SQLColumnExpression[str] | SQLColumnExpression[str | None]

_EVERYONE: dict[Role, Scope] = {
    "admin": "all",
    "dispatcher": "region",
    "org_admin": "organization",
    "caregiver": "own",
    "elder": "own",
    "auditor": "region",
    "finance": "region",
}

MATRIX: dict[str, dict[Role, Scope]] = {
    # accounts
    "users.create": {"admin": "all"},
    "users.read": {"admin": "all"},
    "users.update": {"admin": "all"},  # deactivate, reactivate, unlock, reset the second factor
    "users.delete": {"admin": "all"},
    "auth.me": dict(_EVERYONE),
    "auth.logout": dict(_EVERYONE),
    "auth.password": dict(_EVERYONE),
    "auth.mfa": dict(_EVERYONE),  # enrol a TOTP second factor
    # registry: organisations and caregivers (dispatch)
    "organizations.create": {"admin": "all"},
    "organizations.read": {
        "admin": "all", "dispatcher": "region", "org_admin": "organization", "auditor": "region", "finance": "region",
    },
    "caregivers.create": {"admin": "all", "org_admin": "organization"},
    "caregivers.update": {"admin": "all", "org_admin": "organization"},
    "caregivers.read": {
        "admin": "all", "dispatcher": "region", "org_admin": "organization", "auditor": "region", "caregiver": "own",
    },
    # registry: elders (orders)
    "elders.create": {"admin": "all"},
    "elders.update": {"admin": "all"},
    "elders.read": {"admin": "all", "dispatcher": "region", "auditor": "region", "elder": "own"},
    "elders.reveal": {"admin": "all", "dispatcher": "region"},
    # registry: devices
    "devices.register": {"admin": "all"},
    "devices.read": {"admin": "all", "dispatcher": "region", "auditor": "region", "elder": "own"},
    "devices.revoke": {"admin": "all", "dispatcher": "region"},
    "devices.configure": {"admin": "all", "dispatcher": "region"},  # call-button mapping
    "devices.dead_letters": {"admin": "all", "dispatcher": "region", "auditor": "region"},
    # monitoring and alarms (devices)
    "elders.monitoring": {"admin": "all", "dispatcher": "region"},
    "elders.sos": {"admin": "all", "dispatcher": "region", "elder": "own"},
    "alarms.read": {"admin": "all", "dispatcher": "region", "auditor": "region"},
    "alarms.respond": {"admin": "all", "dispatcher": "region"},
    "alarms.response_times": {"admin": "all", "dispatcher": "region", "auditor": "region"},
    # health data (vitals, positions, fall/heart-rate details): not a route of its own but a field-level grant that
    # endpoints returning such data check with `kernel.authz.may(principal, "health.read")`; others see them redacted
    "health.read": {"admin": "all", "dispatcher": "region", "elder": "own"},
    # catalogue
    "services.read": dict(_EVERYONE),
    # orders, offers, visits
    "orders.create": {"admin": "all", "dispatcher": "region", "elder": "own", "caregiver": "own"},
    "orders.read": {
        "admin": "all", "dispatcher": "region", "org_admin": "organization", "caregiver": "own", "elder": "own",
        "auditor": "region",
    },
    "orders.queue.read": {"admin": "all", "dispatcher": "region", "auditor": "region"},
    "orders.cancel": {"admin": "all", "dispatcher": "region", "elder": "own"},
    "orders.assign": {"admin": "all", "dispatcher": "region"},
    "orders.candidates": {"admin": "all", "dispatcher": "region"},
    "caregivers.positions": {"admin": "all", "dispatcher": "region"},
    "caregivers.self": {"caregiver": "own"},
    "offers.respond": {"caregiver": "own"},
    "caregivers.stream": {"caregiver": "own"},  # the app's live stream of its own offers and orders
    "visits.work": {"caregiver": "own"},
    "visits.read": {
        "admin": "all", "dispatcher": "region", "org_admin": "organization", "caregiver": "own", "elder": "own",
        "auditor": "region",
    },
    "visits.confirm": {"admin": "all", "dispatcher": "region", "elder": "own"},
    "visits.exceptions.read": {"admin": "all", "dispatcher": "region", "auditor": "region"},
    "visits.exceptions.resolve": {"admin": "all", "dispatcher": "region"},
    # billing: programmes, contracts, entitlements, settlements (settlements belong to the programme's region)
    "programs.create": {"admin": "all", "finance": "region"},
    "programs.read": {"admin": "all", "finance": "region", "auditor": "region"},
    "contracts.create": {"admin": "all", "finance": "region"},
    "contracts.read": {"admin": "all", "finance": "region", "auditor": "region", "org_admin": "organization"},
    "entitlements.read": {
        "admin": "all", "finance": "region", "dispatcher": "region", "auditor": "region", "elder": "own",
    },
    "settlements.create": {"admin": "all", "finance": "region"},
    "settlements.approve": {"admin": "all", "finance": "region"},
    "settlements.read": {"admin": "all", "finance": "region", "auditor": "region", "org_admin": "organization"},
    # supervision
    "audit.read": {"admin": "all", "auditor": "region"},
    "audit.verify": {"admin": "all", "auditor": "all"},
    "console.view": {"admin": "all", "dispatcher": "region"},
    "inspections.write": {"admin": "all", "auditor": "region"},
    "blacklist.read": {"admin": "all", "auditor": "region", "dispatcher": "region"},
    "blacklist.write": {"admin": "all"},
}

# Routes anyone may call (no token): health, docs, login.
PUBLIC_PATHS: frozenset[str] = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
     "/v1/auth/token", "/v1/auth/session", "/console",
     # devices: the device token is checked by the endpoint itself; the EMQX hooks by their shared secret
     "/v1/devices/{device}/events", "/v1/broker/emqx/authenticate", "/v1/broker/emqx/authorize"}
)


@dataclass(frozen=True)
class Principal:
    """Who is calling, with the scope claims carried in the token."""

    user_id: str
    username: str
    role: Role
    organization_id: str | None = None
    region_code: str | None = None
    elder_ids: frozenset[str] = field(default_factory=frozenset)
    caregiver_id: str | None = None
    system: bool = False  # the service itself acting (seeding, CLI), not a login

    @property
    def actor_id(self) -> str:
        return f"system:{self.username}" if self.system else f"user:{self.user_id}"


@dataclass(frozen=True)
class Access:
    """The caller and the scope one permission grants it; the questions every endpoint asks of an object."""

    principal: Principal
    permission: str
    scope: Scope

    @property
    def actor_id(self) -> str:
        return self.principal.actor_id

    @property
    def role(self) -> str:
        return "system" if self.principal.system else self.principal.role

    @classmethod
    def system(cls, name: str) -> Access:
        """Full access for the service's own jobs (demo seeding, CLI); audited as `system:<name>`."""
        principal = Principal(user_id=f"system:{name}", username=name, role="admin", system=True)
        return cls(principal=principal, permission="system", scope="all")

    def covers(self, *, region_code: str | None = None, organization_id: str | uuid.UUID | None = None,
               elder_id: str | uuid.UUID | None = None, caregiver_id: str | uuid.UUID | None = None) -> bool:
        """Whether an object with these attributes is inside the caller's scope for this permission."""
        p = self.principal
        if self.scope == "all":
            return True
        if self.scope == "region":
            return region_code is not None and p.region_code is not None and scope_covers(p.region_code, region_code)
        if self.scope == "organization":
            return organization_id is not None and p.organization_id == str(organization_id)
        # own
        if p.role == "elder":
            return elder_id is not None and str(elder_id) in p.elder_ids
        if p.role == "caregiver":
            return caregiver_id is not None and p.caregiver_id == str(caregiver_id)
        return False

    def region_clause(self, region_col: RegionColumn,
                      town_col: SQLColumnExpression[str | None] | None = None) -> ColumnElement[bool]:
        """The SQL form of `covers(region_code=…)` for list queries (region and all scopes)."""
        if self.scope == "all":
            return true()
        code = self.principal.region_code
        if self.scope != "region" or not code:
            return false()
        return region_filter(code, region_col, town_col)

    def ensure(self, *, what: str = "object", **attributes: str | uuid.UUID | None) -> None:
        """404 for an object outside scope: callers cannot tell 'not yours' from 'not there'."""
        if not self.covers(**attributes):  # type: ignore[arg-type]
            raise NotFound(f"{what} not found")


def region_filter(code: str, region_col: RegionColumn,
                  town_col: SQLColumnExpression[str | None] | None = None) -> ColumnElement[bool]:
    """Rows inside region `code`: a province (`15xxxx` ending 0000), a prefecture (ending 00), a county, or a town
    (9 digits, where the table has a town column) — the SQL form of `kernel.regions.scope_covers`."""
    if len(code) == 6 and code.endswith("0000"):
        return region_col.like(code[:2] + "%")
    if len(code) == 6 and code.endswith("00"):
        return region_col.like(code[:4] + "%")
    if len(code) == 6:
        return region_col == code
    if town_col is not None and len(code) == 9:
        return town_col == code
    return false()


def scope_for(permission: str, role: Role) -> Scope | None:
    try:
        return MATRIX[permission].get(role)
    except KeyError:
        raise KeyError(f"permission {permission!r} is not in the matrix (kernel/authz.py)") from None


def grant(principal: Principal, permission: str) -> Access:
    scope = scope_for(permission, principal.role)
    if scope is None:
        raise PermissionDenied(f"role {principal.role} may not {permission}", code="forbidden",
                               details={"permission": permission})
    return Access(principal=principal, permission=permission, scope=scope)


def may(principal: Principal, permission: str) -> bool:
    """Whether the caller holds a permission at all (field-level grants such as `health.read`)."""
    return principal.system or scope_for(permission, principal.role) is not None


def roles_with(permission: str) -> Iterable[Role]:
    return MATRIX[permission].keys()


def matrix_markdown() -> str:
    """The matrix as the Markdown table of docs/access-matrix.md (a test keeps the file equal to this)."""
    lines = [
        "# Access matrix",
        "",
        "Generated from `kernel.authz.MATRIX` by `python -m kernel.authz > docs/access-matrix.md`; a test fails when",
        "this file and the code differ. Scopes: `own` (a caregiver's own offers and visits, an elder login's own",
        "elders), `organization`, `region` (the user's region code: province, prefecture, county or town), `all`.",
        "A blank cell is refused with 403 `forbidden`; an object outside the scope answers 404.",
        "",
        "| permission | " + " | ".join(ROLES) + " |",
        "|---|" + "---|" * len(ROLES),
    ]
    for permission, grants in MATRIX.items():
        lines.append(f"| `{permission}` | " + " | ".join(grants.get(role, "") for role in ROLES) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(matrix_markdown(), end="")
