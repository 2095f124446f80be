-- Big Bro's consciousness tables, with the original system's names and columns so that the
-- existing Big Bro and its tools keep working. Additions are marked.

CREATE TABLE IF NOT EXISTS claude_state (
    agent_id            VARCHAR(50) PRIMARY KEY,
    current_mode        VARCHAR(50),
    last_wake_at        TIMESTAMPTZ,
    last_think_at       TIMESTAMPTZ,
    last_action_at      TIMESTAMPTZ,
    last_poll_at        TIMESTAMPTZ,
    api_spend_today     DECIMAL(10, 4) DEFAULT 0,
    api_spend_month     DECIMAL(10, 4) DEFAULT 0,
    daily_budget        DECIMAL(10, 4) DEFAULT 5.00,
    current_schedule    VARCHAR(100),
    next_scheduled_wake TIMESTAMPTZ,
    status_message      TEXT,
    error_count_today   INTEGER DEFAULT 0,
    last_error          TEXT,
    last_error_at       TIMESTAMPTZ,
    created_at          TIMESTAMPTZ DEFAULT now(),
    updated_at          TIMESTAMPTZ DEFAULT now(),
    spend_day           DATE  -- addition: the trading day api_spend_today belongs to
);
INSERT INTO claude_state (agent_id, daily_budget) VALUES
    ('public_claude', 5.00), ('intl_claude', 5.00), ('big_bro', 10.00)
ON CONFLICT (agent_id) DO NOTHING;

CREATE TABLE IF NOT EXISTS claude_messages (
    id                 SERIAL PRIMARY KEY,
    message_uuid       UUID UNIQUE DEFAULT gen_random_uuid(),
    from_agent         VARCHAR(50) NOT NULL,
    to_agent           VARCHAR(50) NOT NULL,
    msg_type           VARCHAR(50) NOT NULL,
    priority           VARCHAR(20) DEFAULT 'normal',
    subject            VARCHAR(500),
    body               TEXT,
    data               JSONB,
    reply_to_id        INTEGER REFERENCES claude_messages (id),
    thread_id          INTEGER,
    status             VARCHAR(50) DEFAULT 'pending',
    created_at         TIMESTAMPTZ DEFAULT now(),
    read_at            TIMESTAMPTZ,
    processed_at       TIMESTAMPTZ,
    expires_at         TIMESTAMPTZ,
    requires_response  BOOLEAN DEFAULT false,
    response_deadline  TIMESTAMPTZ,
    idempotency_key    TEXT UNIQUE  -- addition: a retried insert never duplicates a message
);
CREATE INDEX IF NOT EXISTS idx_messages_to_status ON claude_messages (to_agent, status, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_messages_pending ON claude_messages (to_agent, created_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_messages_thread ON claude_messages (thread_id);
CREATE INDEX IF NOT EXISTS idx_messages_from ON claude_messages (from_agent, created_at DESC);

CREATE TABLE IF NOT EXISTS claude_observations (
    id               SERIAL PRIMARY KEY,
    agent_id         VARCHAR(50) NOT NULL,
    source_id        INTEGER,
    source_db        VARCHAR(50),
    observation_type VARCHAR(100),
    subject          VARCHAR(200),
    content          TEXT NOT NULL,
    confidence       DECIMAL(3, 2),
    horizon          VARCHAR(10),
    market           VARCHAR(20),
    tags             JSONB,
    created_at       TIMESTAMPTZ DEFAULT now(),
    expires_at       TIMESTAMPTZ,
    acted_upon       BOOLEAN DEFAULT false,
    action_taken     TEXT,
    action_at        TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS claude_learnings (
    id                  SERIAL PRIMARY KEY,
    agent_id            VARCHAR(50) NOT NULL,
    source_id           INTEGER,
    source_db           VARCHAR(50),
    category            VARCHAR(100),
    learning            TEXT NOT NULL,
    source              VARCHAR(200),
    context             TEXT,
    confidence          DECIMAL(3, 2),
    times_validated     INTEGER DEFAULT 0,
    times_contradicted  INTEGER DEFAULT 0,
    applies_to_markets  JSONB,
    created_at          TIMESTAMPTZ DEFAULT now(),
    last_validated_at   TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ DEFAULT now()
);

CREATE TABLE IF NOT EXISTS claude_questions (
    id                 SERIAL PRIMARY KEY,
    agent_id           VARCHAR(50),
    source_id          INTEGER,
    source_db          VARCHAR(50),
    question           TEXT NOT NULL,
    context            TEXT,
    horizon            VARCHAR(10),
    priority           INTEGER DEFAULT 5,
    category           VARCHAR(100),
    status             VARCHAR(50) DEFAULT 'open',
    current_hypothesis TEXT,
    evidence_for       TEXT,
    evidence_against   TEXT,
    answer             TEXT,
    think_frequency    VARCHAR(50),
    last_thought_at    TIMESTAMPTZ,
    next_think_at      TIMESTAMPTZ,
    created_at         TIMESTAMPTZ DEFAULT now(),
    updated_at         TIMESTAMPTZ DEFAULT now(),
    answered_at        TIMESTAMPTZ
);

-- Pending messages in the order an agent must read them: urgent > high > normal > low, then time.
-- (The original sorted priority as text.)
CREATE OR REPLACE VIEW v_pending_messages AS
SELECT *,
       CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 WHEN 'low' THEN 3 ELSE 4 END AS priority_rank
FROM claude_messages
WHERE status = 'pending';
