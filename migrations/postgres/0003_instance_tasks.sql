-- Instance tasks and agent credentials. Keep in step with ../sqlite/0003_instance_tasks.sql.

-- The bearer token the zone presents to a host's agent. Never returned by the API.
ALTER TABLE hosts ADD COLUMN agent_token TEXT;

-- What the instance was created with, so a migration can choose a target that still meets it.
ALTER TABLE instances ADD COLUMN requirements TEXT NOT NULL DEFAULT '[]';
-- The task in progress (create, start, stop, reboot, migrate, delete), the node running it and,
-- for a migration, the target host (whose capacity is already reserved). A task whose node has
-- left the zone is taken over by the instance's new ring owner; see services/instance.rs.
ALTER TABLE instances ADD COLUMN task TEXT;
ALTER TABLE instances ADD COLUMN task_node TEXT;
ALTER TABLE instances ADD COLUMN task_target TEXT REFERENCES hosts (id);
CREATE INDEX instances_task_node ON instances (task_node);
