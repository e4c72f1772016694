"""The model registry: every policy and reward model, where it lives and where it came from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.errors import UserError
from db.models import MODEL_KINDS, Model, utcnow
from db.names import checked_name

MODEL_NAME_LENGTH: int = Model.__table__.c.name.type.length


def find_model(session: Session, name: str) -> Model | None:
    return session.scalar(select(Model).where(Model.name == name))


def register_model(
    session: Session,
    *,
    name: str,
    kind: str,
    path: str,
    parent: Model | None = None,
    config: dict[str, Any] | None = None,
    promote: bool = False,
) -> Model:
    name = checked_name(name, what="model name", max_length=MODEL_NAME_LENGTH, example="sft-1")
    if kind not in MODEL_KINDS:
        raise UserError(f"Unknown model kind {kind!r}; use one of: {', '.join(MODEL_KINDS)}.")
    if find_model(session, name) is not None:
        raise UserError(f"A model named {name!r} is already registered; choose another name.")
    model = Model(
        name=name,
        kind=kind,
        path=path,
        parent_id=parent.id if parent else None,
        config=config or {},
        promoted_at=utcnow() if promote else None,
    )
    session.add(model)
    session.flush()
    return model


def current_policy(session: Session) -> Model | None:
    """The policy promoted last, or None before any policy was promoted."""
    return session.scalar(
        select(Model)
        .where(Model.kind == "policy", Model.promoted_at.is_not(None))
        .order_by(Model.promoted_at.desc(), Model.id.desc())
        .limit(1)
    )


def promote(session: Session, model: Model) -> None:
    model.promoted_at = utcnow()
    session.flush()


def list_models(session: Session, kind: str | None = None) -> list[Model]:
    query = select(Model).order_by(Model.id)
    if kind is not None:
        query = query.where(Model.kind == kind)
    return list(session.scalars(query))


def lineage(session: Session, model: Model) -> list[Model]:
    """The model, its parent, its parent's parent... up to the root."""
    chain = [model]
    while chain[-1].parent_id is not None and len(chain) < 1000:
        chain.append(session.get(Model, chain[-1].parent_id))
    return chain
