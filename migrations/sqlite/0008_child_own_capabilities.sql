-- A child's own hosts' aggregate (JSON of api::Aggregate), without its children: a parent merges
-- its subtree per zone id from these, so a zone reached by two paths (a diamond) counts once.
-- NULL until the child's first poll that reports it.
ALTER TABLE child_zones ADD COLUMN own_capabilities TEXT;
