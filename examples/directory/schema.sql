-- The employee directory of the pub-sub article, with a few sample rows.
-- Apply with psql, then watch both tables in copy mode (README.md):
--
--   bin/pgmirror watch --dsn "$DSN" --table employees --key id --prefix employee: --columns name,title,department
--   bin/pgmirror watch --dsn "$DSN" --table departments --key id --prefix department: --columns name,location,manager_id
--
-- so that 'employee:' || id holds {"name":..,"title":..,"department":..} and
-- 'department:' || id holds {"name":..,"location":..,"manager_id":..}.
CREATE TABLE IF NOT EXISTS departments (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL,
    location   text NOT NULL,
    manager_id uuid NOT NULL -- an employee; no foreign key, so either table can be filled first
);

CREATE TABLE IF NOT EXISTS employees (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title      text NOT NULL,
    name       text NOT NULL,
    department uuid NOT NULL REFERENCES departments (id)
);

INSERT INTO departments (id, name, location, manager_id) VALUES
    ('d0000000-0000-4000-8000-000000000001', 'Engineering', 'Building 1', 'e0000000-0000-4000-8000-000000000001'),
    ('d0000000-0000-4000-8000-000000000002', 'Sales',       'Building 2', 'e0000000-0000-4000-8000-000000000004')
ON CONFLICT (id) DO NOTHING;

INSERT INTO employees (id, title, name, department) VALUES
    ('e0000000-0000-4000-8000-000000000001', 'VP Engineering',    'Grace Hopper',      'd0000000-0000-4000-8000-000000000001'),
    ('e0000000-0000-4000-8000-000000000002', 'Engineer',          'Alan Turing',       'd0000000-0000-4000-8000-000000000001'),
    ('e0000000-0000-4000-8000-000000000003', 'Engineer',          'Katherine Johnson', 'd0000000-0000-4000-8000-000000000001'),
    ('e0000000-0000-4000-8000-000000000004', 'Head of Sales',     'Mary Jackson',      'd0000000-0000-4000-8000-000000000002'),
    ('e0000000-0000-4000-8000-000000000005', 'Account Executive', 'Dorothy Vaughan',   'd0000000-0000-4000-8000-000000000002')
ON CONFLICT (id) DO NOTHING;
