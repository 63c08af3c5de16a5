-- Indexes for reading a zone of 1,000,000 instances (issue 9). Keep in step with
-- ../sqlite/0007_instance_read_indexes.sql.

-- A client's page of instances (`WHERE client_id = $1 AND id > $2 ORDER BY id LIMIT $3`) walks
-- this index in order and stops after one page; on (client_id) alone the database read all of a
-- client's rows and sorted them, or walked the primary key filtering every row. It also answers
-- "does the zone hold any instance of client X?" (the lowest-zone lookup), so the old index goes.
CREATE INDEX instances_client_id_id ON instances (client_id, id);
DROP INDEX instances_client_id;

-- The instances with a task in progress, which every node lists each heartbeat to take over the
-- tasks of dead nodes: a handful of rows among millions. A partial index holds only those, in id
-- order; the index on task_node held a NULL entry per instance and SQLite did not use it for
-- `IS NOT NULL` (it walked the whole table every second).
CREATE INDEX instances_in_task ON instances (id, task_node) WHERE task_node IS NOT NULL;
DROP INDEX instances_task_node;
