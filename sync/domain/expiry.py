"""Devices that registered and never made a recording are deleted after a
while (`unused_device_expiry_hours`, a day by default), so that a flood of
anonymous registrations cannot fill the disk: registration needs no account,
so nothing else bounds how many devices pile up.

A device that made even one recording is kept for good, with everything it
sent. An expired device's tokens stop working (401 `token_revoked`, as for a
revoked device); a phone that registered long before filming simply
registers again, which the reference client and the browser recorder do.
Audit entries that name an expired device stay as they are (the log is
append-only); each run adds one summary entry per organisation that lost
devices, with the count only.
"""

from __future__ import annotations

from datetime import timedelta

from ..archive import Archive
from ..timefmt import format_time
from . import audit

_BATCH = 1000  # devices per write transaction, so uploads never wait long


def expire_unused_devices(archive: Archive) -> int:
    """Delete every device registered more than `unused_device_expiry_hours`
    ago that has no recording; return how many were deleted."""
    cutoff = format_time(archive.clock() - timedelta(hours=archive.settings.unused_device_expiry_hours))
    removed: dict[int, int] = {}
    while True:
        with archive.database.transaction() as db:
            # Checked again inside the write transaction: a recording made a
            # moment ago keeps its device.
            rows = list(db.query(
                """SELECT d.id, d.organisation_id FROM devices d
                   WHERE d.created_at < ? AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.device_id = d.id)
                   ORDER BY d.created_at LIMIT ?""", [cutoff, _BATCH]))
            if not rows:
                break
            db.execute(f"DELETE FROM devices WHERE id IN ({', '.join('?' * len(rows))})", [row["id"] for row in rows])
            for row in rows:
                removed[row["organisation_id"]] = removed.get(row["organisation_id"], 0) + 1
        if len(rows) < _BATCH:
            break
    if removed:
        with archive.database.transaction() as db:
            now = archive.now()
            for organisation_id, count in sorted(removed.items()):
                audit.append_entry(db, at=now, actor="system", action="devices.expired",
                                   organisation_id=organisation_id,
                                   detail={"count": count,
                                           "registered_before": cutoff,
                                           "reason": "registered but never made a recording"})
    return sum(removed.values())
