"""Who may see, spawn and change a template: the one place that decides.

A template has an owner (the user who created it; None for built-ins and
for templates from before owners) and a ``public`` flag only an admin sets.
Built-ins are public. A member sees and spawns their own templates and the
public ones; any other template is ``template_not_found``, the same answer a
missing one gets. Only its owner or an admin rebuilds or deletes a template;
another member gets 403 for a public one (they can see it), else 404.
A deleted template that ended sandboxes still name is kept as a ``deleted``
row (their history stays whole) that nobody sees; its name is free again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from qbox.core.errors import PermissionDeniedError, TemplateNotFoundError
from qbox.server.db.tables import Template
from qbox.server.principal import Principal

DELETED = "deleted"


def may_see(principal: Principal, template: Template) -> bool:
    if template.status == DELETED:
        return False
    return (principal.is_admin or template.public or template.builtin
            or template.owner_id == principal.user_id)


def may_change(principal: Principal, template: Template) -> bool:
    return may_see(principal, template) and (principal.is_admin or template.owner_id == principal.user_id)


def visible_to(principal: Principal) -> ColumnElement[bool]:
    """``may_see`` as a WHERE clause, for listings."""
    shown = Template.status != DELETED
    if principal.is_admin:
        return shown
    return and_(shown, or_(Template.public.is_(True), Template.builtin.is_(True),
                           Template.owner_id == principal.user_id))


async def visible_template(session: AsyncSession, principal: Principal, template_id: str, *,
                           for_spawn: bool = False) -> Template:
    """The template, if ``principal`` may see it; else ``template_not_found``.

    ``for_spawn`` holds a share lock on the row (where the database has them) until
    the caller's transaction ends, so a deletion cannot slip between the check and
    the new sandbox's insert.
    """
    query = select(Template).where(Template.id == template_id)
    if for_spawn:
        # Read afresh even when the session holds the row from an earlier transaction.
        query = query.with_for_update(read=True).execution_options(populate_existing=True)
    template = (await session.execute(query)).scalar_one_or_none()
    if template is None or not may_see(principal, template):
        raise not_found(template_id)
    return template


async def changeable_template(session: AsyncSession, principal: Principal, template_id: str,
                              verb: str) -> Template:
    """The template, if ``principal`` may ``verb`` it (owner or admin); 404 if they cannot
    see it, 403 if they can but it is not theirs."""
    template = await visible_template(session, principal, template_id)
    if not may_change(principal, template):
        raise PermissionDeniedError(f"only the owner of template {template_id} or an admin may {verb} it",
                                    details={"templateId": template_id})
    return template


def owner_shown(principal: Principal, template: Template) -> str | None:
    """The owner's id, for admins and for the owner; other users see public templates unattributed."""
    if principal.is_admin or template.owner_id == principal.user_id:
        return template.owner_id
    return None


def not_found(template_id: str) -> TemplateNotFoundError:
    return TemplateNotFoundError(f"template {template_id} not found", details={"templateId": template_id})


def tombstone_values() -> dict[str, Any]:
    """What a deleted template keeps: its id, name and owner; no content, image or secret."""
    return {"status": DELETED, "public": False, "image_ref": "", "image_digest": "", "base_digest": "",
            "registry_ref": "", "size_bytes": 0, "build_error": None, "services": [], "steps": [],
            "envs": {}, "tags": [], "start_cmd": None, "ready_cmd": None, "workdir": None}
