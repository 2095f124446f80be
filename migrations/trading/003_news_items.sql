-- News for get_news: every item a provider (or a replay's news.csv) gave, scored once.
-- Rows carry agent_id like the other trading tables: a replay's hand-made headlines never reach
-- the live agent. An item is kept once per agent: by the provider's id, and by its URL (the same
-- article from two providers); a second symbol for a kept item is added to its symbols.
CREATE TABLE IF NOT EXISTS news_items (
    news_id        BIGSERIAL PRIMARY KEY,
    agent_id       TEXT NOT NULL,
    provider       TEXT NOT NULL,
    provider_id    TEXT NOT NULL,
    symbols        TEXT[] NOT NULL,
    published_at   TIMESTAMPTZ NOT NULL,
    fetched_at     TIMESTAMPTZ NOT NULL,
    source         TEXT NOT NULL DEFAULT '',
    headline       TEXT NOT NULL,
    summary        TEXT NOT NULL DEFAULT '',
    url            TEXT,
    sentiment      DOUBLE PRECISION NOT NULL CHECK (sentiment BETWEEN -1 AND 1),
    catalyst_tags  TEXT[] NOT NULL DEFAULT '{}',
    UNIQUE (agent_id, provider, provider_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS news_items_one_per_url ON news_items (agent_id, url) WHERE url IS NOT NULL;
CREATE INDEX IF NOT EXISTS news_items_symbols ON news_items USING GIN (symbols);
CREATE INDEX IF NOT EXISTS news_items_agent_published ON news_items (agent_id, published_at DESC);
