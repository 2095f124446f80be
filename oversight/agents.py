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

from config.settings import Profile
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
SENDER_ID = re.compile(r"^[a-z][a-z0-9_.-]{1,49}$")


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

    def known(self, found: Iterable[str]) -> list[AgentInfo]:
        """Every agent: the trading agents and Big Bro always, plus the ids found in the tables;
        trading agents first, then Big Bro, demos, replays, archives, others, each by id."""
        ids = set(self.profiles) | {BIG_BRO} | {a for a in found if a}
        order = list(AgentKind)
        return sorted((self.classify(a) for a in ids), key=lambda i: (order.index(i.kind), i.agent_id))
