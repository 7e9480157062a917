//! The SQL schema of the embedded store: the tables as a new store creates
//! them. Columns added later, and older layouts, are upgraded by
//! [`super::migrate`].

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS nodes (
    mac             TEXT PRIMARY KEY NOT NULL,
    hostname        TEXT NOT NULL UNIQUE COLLATE NOCASE,
    ipv4            INTEGER UNIQUE,
    labels          TEXT NOT NULL DEFAULT '{}',
    params          TEXT NOT NULL DEFAULT '{}',
    bootenv         TEXT NOT NULL,
    next_bootenv    TEXT,
    bootenv_expires INTEGER,
    loader          TEXT,
    protected       INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    state_reason    TEXT,
    relay_info      TEXT,
    boot_ipv4       INTEGER,
    arch            TEXT,
    last_seen       INTEGER,
    token           TEXT NOT NULL,
    created         INTEGER NOT NULL,
    origin          TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    ip      INTEGER PRIMARY KEY NOT NULL,
    mac     TEXT,
    state   TEXT NOT NULL,
    expires INTEGER NOT NULL
);
-- Leases are looked up by MAC in memory only; an index on it would cost a
-- write at a random place per lease.
DROP INDEX IF EXISTS leases_by_mac;
-- Each node's timeline, kept together on disk (one B-tree, no index
-- beside it): an event is one insert, a trim one range delete. `mac` is the
-- address as a number; `seq` orders a node's events; `data` is the event's
-- data as JSON, tagged by its kind (`kind` repeats the kind's name, so a
-- query can pick kinds without reading the JSON). Replaces `events`
-- (TEXT mac, rowid and an index: twice the work per event).
CREATE TABLE IF NOT EXISTS timeline (
    mac    INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (mac, seq)
) WITHOUT ROWID;
-- Counters that must survive a restart: `timeline_seq`, the last `seq` used.
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- Config script reports, kept apart from the timeline (whose events are
-- dropped much sooner), bounded per node; `report_drops` counts what the
-- bound dropped.
CREATE TABLE IF NOT EXISTS reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    mac         TEXT NOT NULL,
    at          INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    script      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    duration_ms INTEGER,
    output      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_mac ON reports(mac, id);
CREATE TABLE IF NOT EXISTS report_drops (
    mac     TEXT PRIMARY KEY NOT NULL,
    dropped INTEGER NOT NULL
);
-- Rollouts, each its whole record as JSON (`model::Rollout`), rewritten at
-- every step; `created` orders them.
CREATE TABLE IF NOT EXISTS rollouts (
    id      TEXT PRIMARY KEY NOT NULL,
    created INTEGER NOT NULL,
    doc     TEXT NOT NULL
) WITHOUT ROWID;
"#;
