"""Who a sample-session run speaks as: an agent id of its own, never the live agent's.

``agent.py --force`` (or ``--mode close|heartbeat --force``) with no broker configured trades the
bundled sample session on the paper exchange. Such a run is a demo: it takes the lock of
``<agent_id>-demo``, reads and answers only that agent's inbox, records its rows under that id and
labels what it posts for Big Bro ``[demo]``. A halt or a ``close_all`` that Big Bro sent to the live
agent stays pending for the live agent.
"""
from __future__ import annotations

import dataclasses

DEMO_SUFFIX = "-demo"
DEMO_LABEL = "demo"
AGENT_ID_MAX = 50  # Profile.agent_id's limit


def demo_agent_id(agent_id: str) -> str:
    if agent_id.endswith(DEMO_SUFFIX):
        return agent_id
    return agent_id[: AGENT_ID_MAX - len(DEMO_SUFFIX)] + DEMO_SUFFIX


def demo_settings(settings):
    """``settings`` for the demo: its own agent id, paper only, and a label on what it posts (alerts
    included: their subject says ``[demo]``)."""
    profile = settings.profile
    return dataclasses.replace(
        settings,
        profile=profile.model_copy(update={"agent_id": demo_agent_id(profile.agent_id), "live": False}),
        label=DEMO_LABEL,
    )
