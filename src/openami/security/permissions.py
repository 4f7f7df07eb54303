"""What each role may do: permissions, the roles that grant them, and the sites (or own data) they reach.

Every API route declares one permission (`openami.api.auth.require`). A person holds roles per site
(`user_role`); a role grants its permissions on that site only. The customer role is narrower still: it reaches only
the accounts of the registry customers linked to the person (`user_customer`), never the rest of its site.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from openami.security.models import Role


class Permission(enum.StrEnum):
    SITES_CREATE = "sites:create"  # open a new site (its creator becomes its admin)
    REGISTRY_READ = "registry:read"  # sites, customers, accounts, service points, transformers, meters
    REGISTRY_WRITE = "registry:write"
    METER_KEYS_WRITE = "meter-keys:write"  # provision or rotate a meter's frame-authentication key
    READINGS_READ = "readings:read"
    READINGS_EDIT = "readings:edit"  # correct an interval by hand, with a reason
    BILLS_READ = "bills:read"  # bills, cost so far, projected bill (a customer: their own accounts')
    BILLS_RUN = "bills:run"  # run billing for a site
    HEADEND_READ = "headend:read"  # rejected frames and link state
    RELAY_READ = "relay:read"  # relay commands and a site's control policy
    RELAY_OPERATE = (
        "relay:operate"  # disconnect, reconnect, bulk, cancel; supply protections, weather emergencies
    )
    CONTROL_POLICY_WRITE = "control-policy:write"  # when a site may be cut off (nights, weekends, holidays)
    WALLETS_READ = "wallets:read"  # a prepaid wallet (a customer: their own accounts'), a site's credit rules
    CREDIT_RULES_WRITE = "credit-rules:write"  # a site's thresholds, emergency credit, friendly hours
    TOKENS_ISSUE = "tokens:issue"  # a site's offline-token unit; add, set and disable tokens for a meter
    NOTIFICATIONS_READ = "notifications:read"  # preferences, subscriptions, the messages sent (own accounts')
    NOTIFICATIONS_WRITE = "notifications:write"  # thresholds, quiet hours, language, where alerts go
    AUDIT_READ = "audit:read"
    USERS_READ = "users:read"
    USERS_MANAGE = "users:manage"  # create people, grant and revoke roles, reset passwords
    SELF = "self"  # any signed-in person, about themselves: who am I, password, own API tokens


_READ_ALL = frozenset(
    {
        Permission.REGISTRY_READ,
        Permission.BILLS_READ,
        Permission.READINGS_READ,
        Permission.HEADEND_READ,
        Permission.RELAY_READ,
        Permission.WALLETS_READ,
        Permission.NOTIFICATIONS_READ,
        Permission.USERS_READ,
        Permission.SELF,
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(
        {
            Permission.REGISTRY_READ,
            Permission.REGISTRY_WRITE,
            Permission.METER_KEYS_WRITE,
            Permission.READINGS_READ,
            Permission.READINGS_EDIT,
            Permission.HEADEND_READ,
            Permission.RELAY_READ,
            Permission.RELAY_OPERATE,
            Permission.WALLETS_READ,
            Permission.CREDIT_RULES_WRITE,
            Permission.TOKENS_ISSUE,
            Permission.NOTIFICATIONS_READ,
            Permission.NOTIFICATIONS_WRITE,
            Permission.SELF,
        }
    ),
    Role.BILLING: frozenset(
        {
            Permission.REGISTRY_READ,
            Permission.READINGS_READ,
            Permission.BILLS_READ,
            Permission.BILLS_RUN,
            Permission.WALLETS_READ,
            Permission.CREDIT_RULES_WRITE,
            Permission.TOKENS_ISSUE,
            Permission.NOTIFICATIONS_READ,
            Permission.NOTIFICATIONS_WRITE,
            Permission.SELF,
        }
    ),
    Role.FIELD_TECHNICIAN: frozenset(
        {
            Permission.REGISTRY_READ,
            Permission.READINGS_READ,
            Permission.HEADEND_READ,
            Permission.RELAY_READ,
            Permission.SELF,
        }
    ),
    Role.AUDITOR: _READ_ALL | {Permission.AUDIT_READ},
    Role.CUSTOMER: frozenset(
        {
            Permission.READINGS_READ,
            Permission.BILLS_READ,
            Permission.WALLETS_READ,
            Permission.NOTIFICATIONS_READ,
            Permission.NOTIFICATIONS_WRITE,
            Permission.SELF,
        }
    ),
}

# Roles whose reach is the whole site; a customer's is only their own accounts.
SITE_WIDE_ROLES = frozenset(Role) - {Role.CUSTOMER}


def roles_granting(permission: Permission) -> frozenset[Role]:
    return frozenset(role for role, granted in ROLE_PERMISSIONS.items() if permission in granted)


@dataclass(frozen=True, slots=True)
class Reach:
    """Where one permission reaches for one person: whole sites, and sites where only their own accounts count."""

    site_ids: frozenset[int]  # sites where a site-wide role grants the permission
    own_site_ids: frozenset[int]  # sites where only the customer role grants it

    @property
    def any(self) -> bool:
        return bool(self.site_ids or self.own_site_ids)

    def whole_site(self, site_id: int) -> bool:
        return site_id in self.site_ids


def reach(grants: frozenset[tuple[Role, int]], permission: Permission) -> Reach:
    """The reach of `permission` for someone holding `grants` ((role, site_id) pairs)."""
    site_wide = frozenset(
        site for role, site in grants if role in SITE_WIDE_ROLES and permission in ROLE_PERMISSIONS[role]
    )
    own = frozenset(
        site
        for role, site in grants
        if role is Role.CUSTOMER and permission in ROLE_PERMISSIONS[role] and site not in site_wide
    )
    return Reach(site_wide, own)
