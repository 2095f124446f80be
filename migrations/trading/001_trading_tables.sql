-- Trading tables. Every row carries agent_id so two agents (intl_claude, public_claude) can share
-- one database without seeing each other's rows.

CREATE TABLE IF NOT EXISTS cycles (
    cycle_id            TEXT PRIMARY KEY,
    agent_id            TEXT NOT NULL,
    market              TEXT NOT NULL CHECK (market IN ('HK', 'US')),
    mode                TEXT NOT NULL,
    brain               TEXT NOT NULL,
    started_at          TIMESTAMPTZ NOT NULL,
    completed_at        TIMESTAMPTZ,
    status              TEXT NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'completed', 'budget_stopped', 'iteration_cap', 'failed')),
    phases              JSONB NOT NULL DEFAULT '{}'::jsonb,
    tools_called        JSONB NOT NULL DEFAULT '[]'::jsonb,
    iterations          INTEGER NOT NULL DEFAULT 0,
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens   BIGINT NOT NULL DEFAULT 0,
    cost_usd            NUMERIC(14, 6) NOT NULL DEFAULT 0,
    trades_executed     INTEGER NOT NULL DEFAULT 0,
    decisions_made      INTEGER NOT NULL DEFAULT 0,
    summary             TEXT,
    error               TEXT
);
CREATE INDEX IF NOT EXISTS cycles_agent_started ON cycles (agent_id, started_at DESC);

CREATE TABLE IF NOT EXISTS decisions (
    decision_id  BIGSERIAL PRIMARY KEY,
    agent_id     TEXT NOT NULL,
    cycle_id     TEXT REFERENCES cycles (cycle_id),
    created_at   TIMESTAMPTZ NOT NULL,
    decision     TEXT NOT NULL CHECK (decision IN ('trade', 'skip', 'close', 'emergency', 'observation')),
    symbol       TEXT,
    tier         INTEGER,
    entry_price  NUMERIC(18, 6),
    stop_price   NUMERIC(18, 6),
    target_price NUMERIC(18, 6),
    reasoning    TEXT NOT NULL,
    source       TEXT NOT NULL,
    data         JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS decisions_agent_cycle ON decisions (agent_id, cycle_id);

CREATE TABLE IF NOT EXISTS positions (
    position_id        BIGSERIAL PRIMARY KEY,
    agent_id           TEXT NOT NULL,
    market             TEXT NOT NULL CHECK (market IN ('HK', 'US')),
    symbol             TEXT NOT NULL,
    side               TEXT NOT NULL CHECK (side IN ('long', 'short')),
    quantity           INTEGER NOT NULL CHECK (quantity > 0),
    entry_price        NUMERIC(18, 6) NOT NULL CHECK (entry_price > 0),
    entry_time         TIMESTAMPTZ NOT NULL,
    trading_day        DATE NOT NULL,
    stop_price         NUMERIC(18, 6),
    target_price       NUMERIC(18, 6),
    tier               INTEGER,
    entry_reason       TEXT,
    entry_volume_rate  DOUBLE PRECISION,
    high_watermark     NUMERIC(18, 6),
    entry_fees         NUMERIC(18, 4) NOT NULL DEFAULT 0,
    status             TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed', 'reconciled_missing')),
    exit_price         NUMERIC(18, 6) CHECK (exit_price IS NULL OR exit_price > 0),
    exit_time          TIMESTAMPTZ,
    exit_reason        TEXT,
    exit_type          TEXT,
    exit_fees          NUMERIC(18, 4) NOT NULL DEFAULT 0,
    realized_pnl       NUMERIC(18, 4),
    realized_pnl_pct   NUMERIC(10, 4),
    cycle_id           TEXT,
    entry_client_order_id TEXT,
    backstop_status    TEXT NOT NULL DEFAULT 'none' CHECK (backstop_status IN ('none', 'placed', 'bracket', 'failed', 'cancelled')),
    backstop_order_ids TEXT[] NOT NULL DEFAULT '{}',
    origin             TEXT NOT NULL DEFAULT 'agent' CHECK (origin IN ('agent', 'adopted')),
    metadata           JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status = 'open' OR exit_time IS NOT NULL)
);
-- One open position per agent and symbol: the original grew 22 open rows for 11 broker positions.
CREATE UNIQUE INDEX IF NOT EXISTS positions_one_open_per_symbol ON positions (agent_id, symbol) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS positions_agent_day ON positions (agent_id, trading_day);

CREATE TABLE IF NOT EXISTS orders (
    order_id         BIGSERIAL PRIMARY KEY,
    agent_id         TEXT NOT NULL,
    cycle_id         TEXT,
    position_id      BIGINT REFERENCES positions (position_id),
    client_order_id  TEXT NOT NULL,
    broker_order_id  TEXT,
    symbol           TEXT NOT NULL,
    side             TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type       TEXT NOT NULL CHECK (order_type IN ('market', 'limit', 'stop')),
    purpose          TEXT NOT NULL CHECK (purpose IN ('entry', 'exit', 'stop_loss', 'take_profit')),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    limit_price      NUMERIC(18, 6),
    stop_price       NUMERIC(18, 6),
    status           TEXT NOT NULL,
    filled_quantity  INTEGER NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
    avg_fill_price   NUMERIC(18, 6),
    fees             NUMERIC(18, 4) NOT NULL DEFAULT 0,
    reject_reason    TEXT,
    trading_day      DATE NOT NULL,
    submitted_at     TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (agent_id, client_order_id)
);
CREATE INDEX IF NOT EXISTS orders_agent_day ON orders (agent_id, trading_day);

CREATE TABLE IF NOT EXISTS monitor_status (
    position_id       BIGINT PRIMARY KEY REFERENCES positions (position_id),
    agent_id          TEXT NOT NULL,
    symbol            TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('running', 'stopped', 'error')),
    owner             TEXT,
    lease_expires_at  TIMESTAMPTZ,
    started_at        TIMESTAMPTZ NOT NULL,
    last_check_at     TIMESTAMPTZ,
    checks_completed  INTEGER NOT NULL DEFAULT 0,
    last_price        NUMERIC(18, 6),
    pnl_pct           NUMERIC(10, 4),
    high_watermark    NUMERIC(18, 6),
    signals           JSONB NOT NULL DEFAULT '[]'::jsonb,
    decision          TEXT,
    haiku_calls       INTEGER NOT NULL DEFAULT 0,
    haiku_cost_usd    NUMERIC(14, 6) NOT NULL DEFAULT 0,
    error_count       INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    updated_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS api_usage (
    usage_id           BIGSERIAL PRIMARY KEY,
    agent_id           TEXT NOT NULL,
    trading_day        DATE NOT NULL,
    cycle_id           TEXT,
    position_id        BIGINT,
    purpose            TEXT NOT NULL CHECK (purpose IN ('decision', 'consult')),
    model              TEXT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
    cost_usd           NUMERIC(14, 6) NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS api_usage_agent_day ON api_usage (agent_id, trading_day);

CREATE TABLE IF NOT EXISTS risk_day (
    agent_id      TEXT NOT NULL,
    trading_day   DATE NOT NULL,
    start_equity  NUMERIC(18, 4) NOT NULL,
    halted        BOOLEAN NOT NULL DEFAULT false,
    halt_reason   TEXT,
    halted_at     TIMESTAMPTZ,
    warned        BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (agent_id, trading_day)
);
