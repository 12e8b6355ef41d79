"""Tell Asterisk to re-read what it loads at reload time from PostgreSQL: queues and their penalty rules.

Queues and rules are read at reload time (not per call), so a short database outage cannot drop a queue or
its members; the price is this explicit reload after every change (`QueueReload` needs no manager privilege
beyond what the service has). Members are dynamic and are never touched by it (`Members: no`).
"""

from __future__ import annotations

import logging

from telephony.ami import AmiActionError, AmiClient, AmiConnectionLost, AmiNotConnected, AmiTimeout

log = logging.getLogger("acd.pbx_sync")


async def reload_queues(ami: AmiClient) -> bool:
    """QueueReload of parameters and rules; False (logged) when Asterisk did not do it."""
    try:
        await ami.action("QueueReload", {"Members": "no", "Rules": "yes", "Parameters": "yes"}, as_list=False)
    except (AmiActionError, AmiNotConnected, AmiConnectionLost, AmiTimeout) as exc:
        log.warning("queue reload not done (%s): queue changes apply after the next reconnect", exc)
        return False
    log.info("queues and penalty rules reloaded from the database")
    return True
