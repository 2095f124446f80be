"""Who is who among the agent ids found in the databases (pure: ids and profiles in, labels out).

The trading agents are the ids of the market profiles (``intl_claude`` for HK, ``public_claude``
for US). Runs that are not the live agent write under ids derived from those: the demo
(``intl_claude-demo``), replays (``intl_claude-replay-<time>``) and the records of earlier paper
runs set aside (``...-paper-before-<run>``). Such an id is never taken for the trading agent,
whatever else it contains.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from config.settings import AGENT_ID, Profile
from consciousness_notify import BIG_BRO


class AgentKind(str, enum.Enum):
    TRADING = "trading"            # the agent cron runs for a market
    DEMO = "demo"                  # the sample session on the paper exchange (`agent.py --force`, no broker)
    REPLAY = "replay"              # historical bars on a simulated clock (`agent.py --replay`)
    PAPER_ARCHIVE = "paper_archive"  # records of earlier paper runs of a day, kept under their own id
    OVERSIGHT = "oversight"        # Big Bro
    OTHER = "other"                # anyone else found in the tables (a person, another tool)


NOTES = {
    AgentKind.DEMO: "demo on the paper exchange (sample session, simulated clock): not the live agent",
    AgentKind.REPLAY: "replay of historical bars on the paper exchange: not the live agent; nothing reads its inbox",
    AgentKind.PAPER_ARCHIVE: "records of earlier paper runs, set aside: not the live agent; nothing reads its inbox",
}

# Who may be written to: a process reads these inboxes (the trading agents and the demo at every run
# or heartbeat, Big Bro through this server). Replays and archives are records only.
RECEIVING_KINDS = frozenset({AgentKind.TRADING, AgentKind.DEMO, AgentKind.OVERSIGHT})
# Who obeys halt / resume / close_all.
CONTROLLABLE_KINDS = frozenset({AgentKind.TRADING, AgentKind.DEMO})
# What a sender id may look like (the column is VARCHAR(50)).
SENDER_ID = AGENT_ID


def skeleton(agent_id: str) -> str:
    """An id with its case and punctuation dropped: ids that differ only there look alike to a reader."""
    return re.sub(r"[^a-z0-9]", "", agent_id.lower())


@dataclass(frozen=True)
class AgentInfo:
    agent_id: str
    kind: AgentKind
    profile: Profile | None  # the market profile the id belongs to (None for Big Bro and others)

    @property
    def market(self) -> str | None:
        return self.profile.market.value if self.profile else None

    @property
    def is_live_agent(self) -> bool:
        """True only for a trading agent's own id (whether it trades paper or real money)."""
        return self.kind is AgentKind.TRADING

    @property
    def receives_messages(self) -> bool:
        return self.kind in RECEIVING_KINDS

    def label(self) -> dict:
        out: dict = {"agent_id": self.agent_id, "kind": self.kind.value}
        if self.market:
            out["market"] = self.market
        if self.kind in NOTES:
            out["note"] = NOTES[self.kind]
        return out


class AgentRegistry:
    """Classifies agent ids against the trading agents' profiles."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self.profiles: Mapping[str, Profile] = {p.agent_id: p for p in profiles}

    def classify(self, agent_id: str) -> AgentInfo:
        if agent_id in self.profiles:
            return AgentInfo(agent_id, AgentKind.TRADING, self.profiles[agent_id])
        if agent_id == BIG_BRO:
            return AgentInfo(agent_id, AgentKind.OVERSIGHT, None)
        # The longest base first: "intl_claude-x" belongs to intl_claude even if "intl" were an id too.
        for base in sorted(self.profiles, key=len, reverse=True):
            if agent_id.startswith(base + "-"):
                rest = agent_id[len(base) + 1:]
                if "paper-before" in rest:
                    kind = AgentKind.PAPER_ARCHIVE
                elif rest.startswith("replay"):
                    kind = AgentKind.REPLAY
                elif rest.startswith("demo"):
                    kind = AgentKind.DEMO
                else:
                    kind = AgentKind.OTHER
                return AgentInfo(agent_id, kind, self.profiles[base].model_copy(update={"agent_id": agent_id}))
        return AgentInfo(agent_id, AgentKind.OTHER, None)

    def look_alike(self, agent_id: str) -> str | None:
        """The agent id that ``agent_id`` imitates without being it (``intl_claude.``, ``intl_claude_demo``,
        ``bigbro``, ``intl_claudex``), or None. Only an exact id is an agent's; a reader of the tables
        must never mistake another writer for one."""
        agents = {BIG_BRO, *self.profiles, *(f"{a}-demo" for a in self.profiles)}
        if agent_id in agents:
            return None
        shape = skeleton(agent_id)
        for candidate in sorted(agents, key=len, reverse=True):
            if shape == skeleton(candidate):
                return candidate
        # A trading agent's own derived ids (demo, replay, archives) are classified, never look-alikes.
        if self.classify(agent_id).kind is not AgentKind.OTHER:
            return None
        return next((a for a in sorted(agents, key=len, reverse=True) if shape.startswith(skeleton(a))), None)

    def known(self, found: Iterable[str]) -> list[AgentInfo]:
        """Every agent: the trading agents and Big Bro always, plus the ids found in the tables;
        trading agents first, then Big Bro, demos, replays, archives, others, each by id."""
        ids = set(self.profiles) | {BIG_BRO} | {a for a in found if a}
        order = list(AgentKind)
        return sorted((self.classify(a) for a in ids), key=lambda i: (order.index(i.kind), i.agent_id))
