-- Addition: trade results reach claude_observations through the notifier's outbox, like messages;
-- the key makes a retried insert (acknowledgement lost) a no-op instead of a duplicate.
ALTER TABLE claude_observations ADD COLUMN IF NOT EXISTS idempotency_key TEXT UNIQUE;
