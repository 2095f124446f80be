-- LLM cost is priced per token (USD 0.10 per million tokens is 1e-7 a token); NUMERIC(14, 6)
-- rounded every call, so the per-call rows no longer added up to what the responses cost.
-- Unconstrained NUMERIC keeps the exact Decimal the agent computes.
ALTER TABLE api_usage ALTER COLUMN cost_usd TYPE NUMERIC;
ALTER TABLE cycles ALTER COLUMN cost_usd TYPE NUMERIC;
ALTER TABLE monitor_status ALTER COLUMN haiku_cost_usd TYPE NUMERIC;
