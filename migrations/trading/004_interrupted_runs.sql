-- A run that was killed (kill -9, a power cut) leaves its cycle 'running' and its monitors
-- 'running' with a lapsing lease. The next run of the agent closes such a cycle as 'interrupted'
-- and shows such a monitor as 'dead' until a run or heartbeat adopts its position.
ALTER TABLE cycles DROP CONSTRAINT IF EXISTS cycles_status_check;
ALTER TABLE cycles ADD CONSTRAINT cycles_status_check
    CHECK (status IN ('running', 'completed', 'budget_stopped', 'iteration_cap', 'failed', 'interrupted'));
ALTER TABLE monitor_status DROP CONSTRAINT IF EXISTS monitor_status_status_check;
ALTER TABLE monitor_status ADD CONSTRAINT monitor_status_status_check
    CHECK (status IN ('running', 'stopped', 'error', 'dead'));
