-- The upgrade ledger: a record of every HubUpgrade, its steps and its backups, kept after the
-- HubUpgrade itself is gone. One schema for SQLite and PostgreSQL: times are RFC 3339 text in
-- UTC (to the second, so they sort as text), sizes and durations are BIGINT.

CREATE TABLE upgrades (
    -- metadata.uid of the HubUpgrade.
    uid TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    -- The hub Deployment.
    hub TEXT NOT NULL,
    -- kubectl, kubectl hubgrade, Argo CD (application X), Flux (...), Helm (...), or a field manager.
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- SQLite, PostgreSQL, MySQL, or Auto while undetected.
    database_type TEXT NOT NULL,
    from_image TEXT,
    to_image TEXT NOT NULL,
    -- JupyterHub release series, from the images (e.g. "4.x", "5.0 – 5.5").
    from_release TEXT,
    to_release TEXT,
    -- The alembic revision the migrated database reached.
    to_revision TEXT,
    phase TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    downtime_seconds BIGINT,
    finished_at TEXT,
    -- When its HubUpgrade was deleted (the ledger keeps the record).
    deleted_at TEXT,
    updated_at TEXT NOT NULL
);

CREATE INDEX upgrades_by_hub ON upgrades (namespace, hub, created_at);

CREATE TABLE steps (
    upgrade_uid TEXT NOT NULL REFERENCES upgrades (uid) ON DELETE CASCADE,
    -- Order in the upgrade's timeline, from 0.
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    -- Succeeded, Failed, Skipped; NULL while running.
    outcome TEXT,
    message TEXT NOT NULL,
    PRIMARY KEY (upgrade_uid, position)
);

CREATE TABLE backups (
    -- One database backup per upgrade.
    upgrade_uid TEXT PRIMARY KEY REFERENCES upgrades (uid) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    hub TEXT NOT NULL,
    -- File, VolumeSnapshot, Clone, Dump.
    kind TEXT NOT NULL,
    -- A path on the hub volume, a VolumeSnapshot, a database name, a dump file.
    location TEXT NOT NULL,
    size_bytes BIGINT,
    checksum TEXT,
    -- 1: read back and checked after it was made.
    verified BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    -- retained or deleted.
    state TEXT NOT NULL,
    deleted_at TEXT,
    -- The retention rule that deleted it.
    deleted_by TEXT
);

CREATE INDEX backups_by_hub ON backups (namespace, hub, created_at);
