"""Where received share requests are kept: the ``share_requests`` table (schema 0011).

A row holds the signed document as received (the requester's own name, contact and key, never
a record of anyone shared), what the network floor cut, the approval set its decision is taken
in, and where it stands (:data:`RequestStatus`). Read and written through :class:`RequestBook`
(:meth:`StateStore.share_requests <connector_core.sync.state.StateStore.share_requests>`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import Connection

from connector_core.sync.tables import share_requests

#: received (waiting for a decision), approved (its job shares until expires_at), denied,
#: lapsed (nobody decided in time), expired or revoked (its job takes everything back),
#: ended (everything it shared was taken back)
RequestStatus = Literal["received", "approved", "denied", "lapsed", "expired", "revoked", "ended"]
LIVE: tuple[RequestStatus, ...] = ("approved",)
TAKING_BACK: tuple[RequestStatus, ...] = ("expired", "revoked")


@dataclasses.dataclass(frozen=True, slots=True)
class StoredRequest:
    """A share request as the state store keeps it."""

    id: str
    request_hash: str
    status: RequestStatus
    document: dict[str, Any]
    review: dict[str, Any]
    set_id: int | None
    received_at: dt.datetime
    decided_at: dt.datetime | None
    expires_at: dt.datetime | None
    ended_at: dt.datetime | None
    note: str | None

    @property
    def job(self) -> str:
        """The name of the job (and delivery connection) an approved request becomes."""
        return f"request-{self.id}"


class RequestBook:
    """The share requests of one state store; `transaction` is the store's."""

    def __init__(
        self, transaction: Callable[..., contextlib.AbstractContextManager[Connection]]
    ) -> None:
        self._transaction = transaction

    def all(self, statuses: tuple[str, ...] | None = None) -> list[StoredRequest]:
        """Every request (with one of `statuses`), by the time it was received."""
        query = sa.select(share_requests).order_by(
            share_requests.c.received_at, share_requests.c.id
        )
        if statuses is not None:
            query = query.where(share_requests.c.status.in_(list(statuses)))
        with self._transaction() as conn:
            return [StoredRequest(**row._mapping) for row in conn.execute(query)]

    def get(self, request_id: str) -> StoredRequest | None:
        """The request `request_id`, None if none was received."""
        query = sa.select(share_requests).where(share_requests.c.id == request_id)
        with self._transaction() as conn:
            row = conn.execute(query).first()
        return None if row is None else StoredRequest(**row._mapping)

    def add(self, request: StoredRequest) -> None:
        """Store a newly received request."""
        with self._transaction(write=True) as conn:
            conn.execute(sa.insert(share_requests).values(dataclasses.asdict(request)))

    def update(self, request_id: str, **values: Any) -> None:
        """Change a request's status, set id, times or note."""
        with self._transaction(write=True) as conn:
            conn.execute(
                share_requests.update().where(share_requests.c.id == request_id).values(**values)
            )
